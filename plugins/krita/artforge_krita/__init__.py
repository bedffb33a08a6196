"""ArtForge for Krita: registers the docker and the menu actions.

The bundled libraries go on sys.path first; outside Krita (the unit tests) `krita` does not
import and nothing is registered.
"""

from artforge_krita.bundled import activate

PROBLEM = activate()

try:
    from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita
except ImportError:
    Krita = None

if Krita is not None:
    from artforge_krita.docker import DOCKER_ID, ArtForgeDocker, ArtForgeExtension

    Krita.instance().addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, ArtForgeDocker))
    Krita.instance().addExtension(ArtForgeExtension(Krita.instance()))
