//! Booting: the kernel and bootloaders a box names, and the compositions that make bootable
//! outputs from a tree (hybrid ISO, GPT disk, Nitro Enclave image) by calling the emitters.
//!
//! Below `build`: nothing here reads the box's output table or calls a command.

pub mod bootloader;
pub mod disk;
pub mod enclave;
pub mod iso;
pub mod kernel;
