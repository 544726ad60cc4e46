"""Installing Bulkhead on a node: containerd's runtime handler (`bulkhead containerd-config`) and
the Kubernetes node installer (`bulkhead node install | uninstall`)."""
