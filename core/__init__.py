"""lorapod's job service: everything both adapters share, free of HTTP and RunPod."""

__version__ = "0.1.0"
