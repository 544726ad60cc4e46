"""`bulkhead doctor`: checks the whole chain on this host (QEMU, accelerator, guest image,
templates, containerd, CNI, memory) and ends with a real sandbox, so an operator learns what is
wrong, and the exact fix, before a pod does."""
