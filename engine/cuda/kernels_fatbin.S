/* SPDX-License-Identifier: MIT */
/*
 * kernels_fatbin.S — the fatbin nvcc built from kernels.cu, embedded in
 * the library as read-only data (cuModuleLoadData takes it from memory:
 * no file to find at run time, no version skew between host and device
 * code).  VELO_CUDA_FATBIN is its path, given by the Makefile.
 */
	.section .rodata.velo_cuda_fatbin, "a"
	.balign 64
	.globl eng_cuda_fatbin
	.type eng_cuda_fatbin, @object
eng_cuda_fatbin:
	.incbin VELO_CUDA_FATBIN
	.globl eng_cuda_fatbin_end
eng_cuda_fatbin_end:
	.byte 0
	.size eng_cuda_fatbin, . - eng_cuda_fatbin
	.section .note.GNU-stack, "", @progbits
