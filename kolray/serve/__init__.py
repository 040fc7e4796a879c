"""Serving: the Ray Serve app, its HTTP API and the Gradio UI.

- :mod:`kolray.serve.app`: the deployments and the typed application builder (``AppArgs``).
- :mod:`kolray.serve.api` and :mod:`kolray.serve.routes`: the FastAPI app, one router per domain.
- :mod:`kolray.serve.ui`: the UI, one function per tab.
- :mod:`kolray.serve.service`: what the routes and the UI answer from.
- :mod:`kolray.serve.deploy`, :mod:`kolray.serve.reload`, :mod:`kolray.serve.client`: deploying
  the app, hot reload of model versions, calls from other processes.
- :mod:`kolray.serve.ray_private`: the only calls into Ray's private modules.
"""
