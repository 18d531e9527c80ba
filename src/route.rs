//! Compiled route tables: (port, host, path, headers) to an action.
