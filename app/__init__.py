"""Adapters: the FastAPI app for pods and the RunPod serverless handler."""
