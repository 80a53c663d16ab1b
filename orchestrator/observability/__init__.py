"""Operations: structured logs with job context and secret masking, worker health."""
