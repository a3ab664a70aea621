"""RunPod-style calls for the pod's /v2 routes: the persistent call table and the runner that executes queued calls."""
