"""gRPC servicers, auth, health and reflection: proto <-> domain."""
