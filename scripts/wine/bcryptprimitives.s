# bcryptprimitives.dll for Wine 8 (Debian 12): Go >= 1.22 on Windows needs
# ProcessPrng from it, which Wine 8 lacks (Wine 9 has it). This stand-in
# fills the buffer with advapi32!SystemFunction036 (RtlGenRandom), which
# Wine 8 has. Only scripts/cross.sh uses it, to run the Windows build of
# tori-run under wine64 in CI; real Windows (8 and later) ships the DLL.
#   ProcessPrng(PBYTE data, SIZE_T len) -> BOOL (always TRUE)
	.text
	.globl	ProcessPrng
ProcessPrng:
	subq	$40, %rsp
	call	*__imp_SystemFunction036(%rip)
	movl	$1, %eax
	addq	$40, %rsp
	ret
	.globl	DllMain
DllMain:
	movl	$1, %eax
	ret
	.section .drectve
	.ascii " -export:ProcessPrng"
