"""Who may call what: credentials, their verification, and the rules every call passes.

One gRPC interceptor (`grpc_access`) and one aiohttp middleware (`http_access`) establish
the caller and check the method's rule; servicers read the caller from `context`.
"""
