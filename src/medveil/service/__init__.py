"""The processor as a service: ``medveil serve`` (FastAPI + uvicorn + SQLite) and its client.

Install with ``pip install medveil[service]`` (fastapi, uvicorn, httpx).
"""
