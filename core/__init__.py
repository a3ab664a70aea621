"""lorapod's job service: everything both adapters share, free of HTTP and RunPod."""
