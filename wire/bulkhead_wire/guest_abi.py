"""The contract between the host and the guest: names and numbers the shim and the agent must
agree on, defined once here so that neither side can drift from the other.

The shim gives QEMU its devices and the guest its kernel command line with these; the agent
finds its ports, mounts its share and serves its API under the same names. A change to a
device name also changes the devices of a VM: bump `bulkhead.vmm.qemu_cmdline.DEVICE_SET` with
it, or clones would resume from templates with other devices.
"""

from __future__ import annotations

# The agent writes it once on each channel when the host is connected; the shim speaks only
# after reading it (a virtio-serial port drops host data no guest process has read yet).
HANDSHAKE_MAGIC = b"BHAGENT1"

# virtio-serial port names (QEMU's `virtserialport,name=`, the guest's /sys/class/virtio-ports).
CTL_PORT_NAME = "bulkhead.ctl"  # ttrpc: the agent API
DATA_PORT_NAME = "bulkhead.data"  # the data channel: every process's stdio, port forwards
KEY_PORT_NAME = "bulkhead.key"  # the VM's channel secret, asked for by the agent
DEBUG_PORT_NAME = "bulkhead.debug"  # the guest's debug shell (`bulkhead shell`)

# vsock ports the agent listens on when the channel is vsock.
VSOCK_CTL_PORT = 1024
VSOCK_DATA_PORT = 1025

# The kernel command-line parameter that tells the agent which channel to open.
CHANNEL_PARAM = "bulkhead.channel"

# The 9p share: QEMU's `mount_tag`, and where the agent mounts it in the guest.
SHARE_MOUNT_TAG = "bulkhead"
GUEST_SHARED_DIR = "/run/bulkhead/shared"
# The same share on a second 9p device that the guest mounts with its caches on (cache=loose):
# containers' image layers are read (and exec'd) through it at guest-local speed. Only what
# never changes while a guest uses it is read there (a fresh name per container, see
# bulkhead.sandbox.image_view); volumes and the write-back target use the coherent mount.
ROOTFS_MOUNT_TAG = "bulkhead-layers"
GUEST_CACHED_SHARE_DIR = "/run/bulkhead/cached"
# Where the agent assembles a layered container's root: GUEST_LAYERS_DIR/<id> is a tmpfs with
# the overlay's upper and work dirs and its mount point, `root` (the spec's root.path).
GUEST_LAYERS_DIR = "/run/bulkhead/layers"
GUEST_LAYERED_ROOT = "root"
# The pod's /dev/shm in the guest, a tmpfs the agent mounts and containers bind.
GUEST_POD_SHM_DIR = "/run/bulkhead/pod-shm"

# The ttrpc service of proto/agent.proto.
AGENT_SERVICE = "bulkhead.agent.v1.Agent"

# How the agent's lines start on the serial console, and the line that tells the template
# builder a VM is idle and ready for its snapshot.
AGENT_CONSOLE_PREFIX = "bulkhead-agent: "
TEMPLATE_READY = "template ready"
TEMPLATE_READY_LINE = AGENT_CONSOLE_PREFIX + TEMPLATE_READY
