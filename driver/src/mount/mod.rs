//! Block devices, filesystems and mounts on the node.
