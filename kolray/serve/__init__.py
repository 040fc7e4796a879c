"""Serving: the Ray Serve app (:mod:`kolray.serve.app`), its HTTP API and the Gradio UI."""
