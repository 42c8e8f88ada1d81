"""Running the detector on GPU nodes: the container's entrypoint, its health check, and the
compose, Kubernetes and monitoring files beside them."""
