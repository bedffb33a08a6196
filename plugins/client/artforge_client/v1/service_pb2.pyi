from . import image_pb2 as _image_pb2
from . import jobs_pb2 as _jobs_pb2
from . import server_pb2 as _server_pb2
from . import text_pb2 as _text_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
