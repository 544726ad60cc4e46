"""The guest image builder behind packaging/build-guest-image, one module per job.

Inputs and keys: layout (paths), digests, inputs; cached layers: debian, rootfs (+ bytecode),
kernel (+ kernel_modules, elf), wheels, copyengine, layers; every build: assemble, initrd,
manifest; cli.
"""
