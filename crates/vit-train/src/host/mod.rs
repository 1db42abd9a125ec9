//! Facts of the machine a run trains on: will it fit in memory ([`memory`]),
//! keeping freed memory in the process ([`allocator`]), and how libtorch's
//! OpenMP threads wait ([`omp`]), free memory of a CUDA device ([`gpu`]).

pub mod allocator;
pub mod gpu;
pub mod memory;
pub mod omp;
