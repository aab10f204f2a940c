"""The browser client: a page served by `interplay serve` (mic, speaker, camera, text, live timeline)
and the WebSocket bridge that gives each page one Session.Converse stream (bridge.py, server.py).
The page's files (static/) are plain JS modules: no build step."""
