"""The gRPC scoring service on the vehicle; no PyTorch."""
