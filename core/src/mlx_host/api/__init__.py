"""HTTP routers, one per OpenAI area, and the dependencies they share."""
