"""The dashboard: a few static files the app serves at /ui (hand-written JavaScript, no CDN, no build step)."""
