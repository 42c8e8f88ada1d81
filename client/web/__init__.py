"""The web page for people: upload a video, see the verdict, the timeline, the boxes and heatmaps.

A FastAPI application beside Triton, talking to it over gRPC (tritonclient's asyncio client)
like any other client. ``create_app`` builds it; ``python -m client web`` serves it with uvicorn.
The page itself is static HTML, CSS and JavaScript of our own (``static/``), which uses the JSON
API (``/api/*``) and nothing else.
"""
