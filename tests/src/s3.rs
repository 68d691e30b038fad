//! A real S3-compatible server (MinIO) on a free loopback port.
