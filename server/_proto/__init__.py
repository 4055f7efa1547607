"""Generated gRPC stubs of protos/alscout/v1/alscout.proto; regenerate with
``python -m alscout.server.proto_gen``, never edit by hand."""
