"""End-to-end tests: the example apps of docs/examples/ under real servers, in subprocesses."""
