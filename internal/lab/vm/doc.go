// Package vm is the host side of lab VM nodes: the kernel and initramfs
// they boot (Debian's linux-image-amd64, uncompressed to the ELF vmlinux,
// which boots twice as fast under TCG; a busybox-static initramfs that
// mounts the host's root read-only over 9p under a tmpfs overlay and
// switches to it), QEMU's command line, its QMP monitor (a NIC's link up
// or down, as a pulled cable), and the VLAN access port that lets a host
// whose kernel has no 802.1Q route a VLAN of the lab's trunk.
//
// Nothing here knows about labs: the lab package decides names, addresses
// and what runs where.
//
// It imports netlink only; its I/O edges are QEMU processes, their QMP
// sockets and the taps of the VLAN access port.
package vm
