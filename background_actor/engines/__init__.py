"""LLM engines behind background_actor.engine.Engine: local (llama.cpp), openai (httpx), vllm."""
