"""A recording stand-in for bpy.types.UILayout, true to Blender's own RNA (runs in the bpy venv).

The bpy module has no UI, so no panel's draw() runs there and a wrong call in one reaches the
artist. `UILayout` takes the place of `self.layout`: every method and attribute is looked up in
`bpy.types.UILayout.bl_rna`, and arguments are parsed the way Blender's function call does it
(pyrna_func_call): required parameters positional or keyword, optional ones keyword only; an
unknown method or keyword, a missing argument or a value of the wrong type raises TypeError or
AttributeError with Blender's message, and enum values (every `icon=`) must be among the RNA
items. Where Blender only prints a warning and draws nothing in its place (a property the data
lacks, an unknown operator, menu or panel) this raises BlenderWarning. `operator()` returns the
operator's real OperatorProperties (a scratch key-map item's, the same type Blender returns), so
only its own properties of the right types are taken, and records the operator's poll() in the
current context (False: Blender greys the button out).

What draw() made is kept as a tree of Nodes (`tree(layout)`) for assertions and an outline.
"""

from __future__ import annotations

import operator as _operator
from collections.abc import Iterator
from typing import Any

import bpy

LAYOUT_RNA = bpy.types.UILayout.bl_rna
# A sub-layout copies these from its parent (Blender's ui_litem_init_from_parent).
INHERITED = frozenset({"alert", "emboss", "operator_context", "use_property_split", "use_property_decorate"})
# A fresh layout's values where RNA's static defaults (False, 0.0) say nothing: these are runtime getters.
FRESH = {"active": True, "enabled": True, "scale_x": 1.0, "scale_y": 1.0}
NOT_MODELLED = frozenset({"direction", "rna_type"})  # depends on how Blender lays the item out
# Parameters that name a property of another parameter's data: name parameter -> data parameter.
PROPERTY_OF = {
    "property": "data",
    "search_property": "search_data",
    "propname": "dataptr",
    "active_propname": "active_dataptr",
    "used_layers_property": "used_layers_data",
    "property_highlight": "data_highlight",
}
# String parameters that name a registered class, and the class it must be.
CLASS_OF = {"menu": bpy.types.Menu, "panel": bpy.types.Panel, "listtype_name": bpy.types.UIList}


class BlenderWarning(Exception):
    """Blender prints this to the console and draws nothing in its place (rna_ui_api.cc's
    RNA_warning), so the artist sees a button missing and no error: here it fails the draw."""


class Node:
    """One call draw() made: a layout (row, box, the panel itself, ...) with the calls made on it as
    children, or an item (prop, label, operator, ...). `args` are the parsed arguments by name."""

    def __init__(self, call: str, args: dict[str, Any], parent: Node | None) -> None:
        self.call, self.args, self.parent = call, args, parent
        self.children: list[Node] = []
        self.attrs: dict[str, Any] = {}  # layout attributes draw() set: enabled, alert, scale_x, ...
        self.operator_properties: bpy.types.OperatorProperties | None = None  # what operator() returned
        self.poll: bool | None = None  # operator(): the operator's poll() where the panel was drawn
        if parent is not None:
            parent.children.append(self)

    @property
    def properties(self) -> dict[str, Any]:
        """operator(): the operator properties draw() set on the button."""
        props = self.operator_properties
        if props is None:
            return {}
        return {name: getattr(props, name) for name in props.bl_rna.properties.keys() if name != "rna_type" and props.is_property_set(name)}

    @property
    def enabled(self) -> bool:
        """As the artist sees it: not greyed out by this or an enclosing layout, nor by a failing poll()."""
        node: Node | None = self
        while node is not None:
            if not node.attrs.get("enabled", True):
                return False
            node = node.parent
        return self.poll is not False

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            yield child
            yield from child.walk()

    def find(self, call: str, **args: Any) -> list[Node]:
        """Every node below this one made by `call` with these argument values."""
        return [n for n in self.walk() if n.call == call and all(n.args.get(k) == v for k, v in args.items())]

    def outline(self, depth: int = 0) -> list[str]:
        args = ", ".join(f"{k}={_show(v)}" for k, v in self.args.items())
        line = f"{'  ' * depth}{self.call}({args})"
        if self.attrs:
            line += " [" + ", ".join(f"{k}={_show(v)}" for k, v in self.attrs.items()) + "]"
        if self.properties:
            line += " {" + ", ".join(f"{k}={_show(v)}" for k, v in self.properties.items()) + "}"
        if self.poll is False:
            line += " poll=False"
        return [line, *(line for child in self.children for line in child.outline(depth + 1))]


def _show(value: Any) -> str:
    return f"<{value.bl_rna.identifier}>" if isinstance(value, bpy.types.bpy_struct) else repr(value)


class DrawSelf:
    """`self` inside draw(): the panel class or the add-on's real preferences, with the stand-in as
    `layout` (a real Panel or AddonPreferences has a layout only while Blender's UI draws it)."""

    def __init__(self, target: Any, layout: UILayout) -> None:
        self._target, self.layout = target, layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def coerce(prop: bpy.types.Property, value: Any, label: str) -> Any:
    """`value` as Blender's pyrna_py_to_prop takes it for the RNA property or parameter `prop`
    (`label`: "Function.text", "UILayout.enabled"), else its TypeError or ValueError. Ranges are
    not checked: Blender clamps."""
    if isinstance(value, DrawSelf):
        value = value._target
    if prop.type in ("BOOLEAN", "INT", "FLOAT") and prop.array_length:
        if isinstance(value, str) or not hasattr(value, "__len__"):
            raise TypeError(f"{label} expected a sequence, not {type(value).__name__}")
        if len(value) != prop.array_length:
            raise ValueError(f"sequences of dimension 0 should contain {prop.array_length} items, not {len(value)}")
        return [_scalar(prop, item, label) for item in value]
    return _scalar(prop, value, label)


def _scalar(prop: bpy.types.Property, value: Any, label: str) -> Any:
    kind = prop.type
    if kind in ("BOOLEAN", "INT"):
        try:
            number = _operator.index(value)
        except TypeError:
            number = None
        if kind == "INT" and number is not None:
            return number
        if kind == "BOOLEAN" and number in (0, 1):
            return bool(number)
        expected = "True/False or 0/1" if kind == "BOOLEAN" else "an int type"
        raise TypeError(f"{label} expected {expected}, not {type(value).__name__}")
    if kind == "FLOAT":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
            raise TypeError(f"{label} expected a float type, not {type(value).__name__}")
        return float(value)
    if kind == "STRING":
        if value is None:
            if prop.is_never_none:
                raise TypeError(f"{label} doesn't support None from string types")
            return None
        if not isinstance(value, str):
            raise TypeError(f"{label} expected a string type, not {type(value).__name__}")
        return value
    if kind == "ENUM":
        chosen = value if prop.is_enum_flag else {value}
        if not isinstance(chosen, (set, frozenset)) or not all(isinstance(v, str) for v in chosen):
            raise TypeError(f"expected a {'set of strings' if prop.is_enum_flag else 'string enum'}, not {type(value).__name__}")
        items = [item.identifier for item in prop.enum_items]
        unknown = sorted(chosen - set(items))
        # A dynamic enum's RNA lists no items (or only its static ones): its items exist for a context.
        if items and unknown:
            # Blender lists every item; the icons are a thousand
            shown = ", ".join(repr(i) for i in items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
            raise TypeError(f'enum "{unknown[0]}" not found in ({shown})')
        return value
    if kind == "POINTER":
        wanted = prop.fixed_type.identifier
        if value is None:
            if prop.is_never_none:
                raise TypeError(f"{label} does not support a 'None' assignment {wanted} type")
            return None
        if not isinstance(value, bpy.types.bpy_struct) or not (wanted == "AnyType" or _is_a(value.bl_rna, wanted)):
            raise TypeError(f"{label} expected a {wanted} type, not {type(value).__name__}")
        return value
    raise TypeError(f"{label} is a {kind.lower()}: the stand-in takes no value for it")


def attribute_value(struct: bpy.types.Struct, name: str, value: Any) -> Any:
    """`item.name = value` for an item of RNA type `struct`, checked as bpy_struct's setattr does:
    the value to store, else Blender's error."""
    prop = struct.properties.get(name)
    if prop is None:
        raise AttributeError(f"'{struct.identifier}' object has no attribute '{name}'")
    if prop.is_readonly:
        raise AttributeError(f'bpy_struct: attribute "{name}" from "{struct.identifier}" is read-only')
    try:
        return coerce(prop, value, f"{struct.identifier}.{name}")
    except (TypeError, ValueError) as error:
        raise type(error)(f"bpy_struct: item.attr = val: {error}") from None


def _is_a(struct: bpy.types.Struct | None, identifier: str) -> bool:
    while struct is not None:
        if struct.identifier == identifier:
            return True
        struct = struct.base
    return False


def parse_arguments(function: bpy.types.Function, args: tuple, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Blender's pyrna_func_call: positional arguments fill required parameters only, in order."""
    inputs = [p for p in function.parameters if not p.is_output]
    if len(args) + len(kwargs) > len(inputs):
        raise TypeError(f"{where}: takes at most {len(inputs)} arguments, got {len(args) + len(kwargs)}")
    values: dict[str, Any] = {}
    keywords_used = 0
    for i, parameter in enumerate(inputs):
        name = parameter.identifier
        if i < len(args):
            if not parameter.is_required:
                raise TypeError(f'{where}: required parameter "{name}" to be a keyword argument!')
            value, which = args[i], f'argument {i + 1}, "{name}"'
        elif name in kwargs:
            value, which, keywords_used = kwargs[name], f'keyword argument "{name}"', keywords_used + 1
        elif parameter.is_required:
            raise TypeError(f'{where}: required parameter "{name}" not specified')
        else:
            continue
        try:
            values[name] = coerce(parameter, value, f"Function.{name}")
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where}: error with {which} -  {error}") from None
    if len(kwargs) > keywords_used:
        unknown = ", ".join(k for k in kwargs if k not in values)
        expected = ", ".join(p.identifier for p in inputs)
        raise TypeError(f"{where}: was called with invalid keyword argument(s) ({unknown}), expected ({expected})")
    return values


def rna_property(data: bpy.types.bpy_struct, name: str) -> bpy.types.Property:
    """The RNA property `name` of `data` (a Python attribute is not one), or Blender's warning."""
    prop = data.bl_rna.properties.get(name)
    if prop is None or name == "rna_type":
        raise BlenderWarning(f"property not found: {data.bl_rna.identifier}.{name}")
    return prop


def operator_function(idname: str) -> Any:
    """bpy.ops' function for `idname` ("module.name" or "MODULE_OT_name", as Blender accepts)."""
    if "_OT_" in idname:
        module, _, name = idname.partition("_OT_")
        module = module.lower()
    else:
        module, _, name = idname.partition(".")
    function = getattr(getattr(bpy.ops, module), name)
    try:
        function.get_rna_type()
    except KeyError:
        raise BlenderWarning(f"unknown operator '{idname}'") from None
    return function


def _check_names(function: bpy.types.Function, values: dict[str, Any], where: str) -> None:
    """What Blender looks up by name when it draws: properties, operators, menus, panels, lists."""
    for name_parameter, data_parameter in PROPERTY_OF.items():
        if name_parameter in values and values.get(data_parameter) is not None:
            prop = rna_property(values[data_parameter], values[name_parameter])
            items = {i.identifier for i in prop.enum_items} if prop.type == "ENUM" else set()
            if name_parameter == "property" and "value" in values and items and values["value"] not in items:  # prop_enum()
                raise BlenderWarning(f"{where}: enum property value not found: {values['value']}")
    if "operator" in values and function.parameters["operator"].type == "STRING":
        properties = operator_function(values["operator"]).get_rna_type().properties
        if "property" in values and "data" not in values and values["property"] not in properties:
            raise BlenderWarning(f"{where}: unknown property '{values['property']}' of operator {values['operator']}")
    for parameter, base in CLASS_OF.items():
        idname = values.get(parameter)
        if isinstance(idname, str) and idname:  # "": none (template_ID_tabs' menu)
            found = getattr(bpy.types, idname, None)
            if not (isinstance(found, type) and issubclass(found, base)):
                raise BlenderWarning(f"{where}: {base.__name__} type not found '{idname}'")


def operator_properties(idname: str) -> bpy.types.OperatorProperties:
    """A fresh OperatorProperties of the operator, as layout.operator() returns: a key-map item's
    in a key configuration of its own, which nothing uses."""
    keyconfigs = bpy.context.window_manager.keyconfigs
    keyconfig = keyconfigs.get("ui_recorder") or keyconfigs.new("ui_recorder")
    keymap = keyconfig.keymaps.get("ui_recorder") or keyconfig.keymaps.new("ui_recorder")
    return keymap.keymap_items.new(idname, "NONE", "NOTHING").properties


class UILayout:
    """Stands in for bpy.types.UILayout as `self.layout`: see the module's docstring."""

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        object.__setattr__(self, "_node", node)

    @classmethod
    def root(cls, name: str) -> UILayout:
        """The layout Blender hands to a panel's (or the preferences') draw()."""
        return cls(Node(name, {}, None))

    def __getattr__(self, name: str) -> Any:
        function = LAYOUT_RNA.functions.get(name)
        if function is not None:
            if not function.use_self:  # icon(), enum_item_name(), ...: Blender's own, they need no layout
                return getattr(bpy.types.UILayout, name)
            return lambda *args, **kwargs: _call(self._node, function, args, kwargs)
        if LAYOUT_RNA.properties.get(name) is not None and name not in NOT_MODELLED:
            node: Node | None = self._node
            while node is not None:
                if name in node.attrs:
                    return node.attrs[name]
                node = node.parent if name in INHERITED else None
            return FRESH.get(name, LAYOUT_RNA.properties[name].default)
        if hasattr(bpy.types.UILayout, name):
            raise NotImplementedError(f"UILayout.{name} exists in Blender but this stand-in does not model it")
        raise AttributeError(f"'UILayout' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        self._node.attrs[name] = attribute_value(LAYOUT_RNA, name, value)


def tree(layout: UILayout) -> Node:
    return layout._node


def _call(parent: Node, function: bpy.types.Function, args: tuple, kwargs: dict[str, Any]) -> Any:
    where = f"UILayout.{function.identifier}()"
    values = parse_arguments(function, args, kwargs, where)
    _check_names(function, values, where)
    node = Node(function.identifier, values, parent)
    outputs = [p for p in function.parameters if p.is_output]
    results = []
    for output in outputs:
        if output.type == "POINTER" and output.fixed_type.identifier == "UILayout":
            # panel() gives a header and a body: one node each under the call's node
            results.append(UILayout(node if len(outputs) == 1 else Node(output.identifier, {}, node)))
        elif output.type == "POINTER" and output.fixed_type.identifier == "OperatorProperties":
            node.poll = bool(operator_function(values["operator"]).poll())
            node.operator_properties = operator_properties(values["operator"])
            results.append(node.operator_properties)
        else:  # template_recent_files()' count: nothing was drawn
            results.append(output.default)
    return tuple(results) if len(results) > 1 else (results[0] if results else None)
