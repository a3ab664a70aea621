"""Webhooks: signed POSTs (Standard Webhooks) of a job's end and, when asked, its throttled progress."""
