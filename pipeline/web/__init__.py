"""HTTP faces of secanalyst: the OpenAI-compatible LLM gateway (`create_gateway_app`)."""
