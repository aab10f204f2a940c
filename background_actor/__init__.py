"""background_actor: the asynchronous side — a Ray actor serving the Background gRPC service.

    from background_actor.actor import start_background      # Ray actor → (handle, "127.0.0.1:port")
    from background_actor.service import serve, ServerConfig  # the same server without Ray
    from background_actor.bench import bench_engine           # `interplay bench engine`

Parts: engine.py (the engine interface; engines/ local · openai · vllm), parsing.py (the JSON action
format for small models), agent.py (the loop), tasks.py (admission, steer, cancel, accounting),
service.py (gRPC + health), actor.py (Ray), client.py (a client with deadlines). See ../shared/DESIGN.md.
"""
