//! The one place where layer errors become gRPC statuses: each code is chosen here,
//! deliberately, with a message that names what went wrong.
