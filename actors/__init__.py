"""Ray Serve: the Generator, Extender and Judge deployments and the client that calls them."""
