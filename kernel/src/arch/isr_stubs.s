# Interrupt entry stubs (generated list; see interrupts.rs). Each stub pushes
# a zero error code where the CPU pushes none, then the vector number, and
# joins isr_common, which saves the general registers and calls
# skiff_isr_dispatch(&mut Frame).
    .section .text.isr, "ax"
    .code64
isr_0:
    pushq $0
    pushq $0
    jmp isr_common
isr_1:
    pushq $0
    pushq $1
    jmp isr_common
isr_2:
    pushq $0
    pushq $2
    jmp isr_common
isr_3:
    pushq $0
    pushq $3
    jmp isr_common
isr_4:
    pushq $0
    pushq $4
    jmp isr_common
isr_5:
    pushq $0
    pushq $5
    jmp isr_common
isr_6:
    pushq $0
    pushq $6
    jmp isr_common
isr_7:
    pushq $0
    pushq $7
    jmp isr_common
isr_8:
    pushq $8
    jmp isr_common
isr_9:
    pushq $0
    pushq $9
    jmp isr_common
isr_10:
    pushq $10
    jmp isr_common
isr_11:
    pushq $11
    jmp isr_common
isr_12:
    pushq $12
    jmp isr_common
isr_13:
    pushq $13
    jmp isr_common
isr_14:
    pushq $14
    jmp isr_common
isr_15:
    pushq $0
    pushq $15
    jmp isr_common
isr_16:
    pushq $0
    pushq $16
    jmp isr_common
isr_17:
    pushq $17
    jmp isr_common
isr_18:
    pushq $0
    pushq $18
    jmp isr_common
isr_19:
    pushq $0
    pushq $19
    jmp isr_common
isr_20:
    pushq $0
    pushq $20
    jmp isr_common
isr_21:
    pushq $21
    jmp isr_common
isr_22:
    pushq $0
    pushq $22
    jmp isr_common
isr_23:
    pushq $0
    pushq $23
    jmp isr_common
isr_24:
    pushq $0
    pushq $24
    jmp isr_common
isr_25:
    pushq $0
    pushq $25
    jmp isr_common
isr_26:
    pushq $0
    pushq $26
    jmp isr_common
isr_27:
    pushq $0
    pushq $27
    jmp isr_common
isr_28:
    pushq $0
    pushq $28
    jmp isr_common
isr_29:
    pushq $29
    jmp isr_common
isr_30:
    pushq $30
    jmp isr_common
isr_31:
    pushq $0
    pushq $31
    jmp isr_common
isr_32:
    pushq $0
    pushq $32
    jmp isr_common
isr_33:
    pushq $0
    pushq $33
    jmp isr_common
isr_34:
    pushq $0
    pushq $34
    jmp isr_common
isr_35:
    pushq $0
    pushq $35
    jmp isr_common
isr_36:
    pushq $0
    pushq $36
    jmp isr_common
isr_37:
    pushq $0
    pushq $37
    jmp isr_common
isr_38:
    pushq $0
    pushq $38
    jmp isr_common
isr_39:
    pushq $0
    pushq $39
    jmp isr_common
isr_40:
    pushq $0
    pushq $40
    jmp isr_common
isr_41:
    pushq $0
    pushq $41
    jmp isr_common
isr_42:
    pushq $0
    pushq $42
    jmp isr_common
isr_43:
    pushq $0
    pushq $43
    jmp isr_common
isr_44:
    pushq $0
    pushq $44
    jmp isr_common
isr_45:
    pushq $0
    pushq $45
    jmp isr_common
isr_46:
    pushq $0
    pushq $46
    jmp isr_common
isr_47:
    pushq $0
    pushq $47
    jmp isr_common
isr_48:
    pushq $0
    pushq $48
    jmp isr_common
isr_49:
    pushq $0
    pushq $49
    jmp isr_common
isr_50:
    pushq $0
    pushq $50
    jmp isr_common
isr_51:
    pushq $0
    pushq $51
    jmp isr_common
isr_52:
    pushq $0
    pushq $52
    jmp isr_common
isr_53:
    pushq $0
    pushq $53
    jmp isr_common
isr_54:
    pushq $0
    pushq $54
    jmp isr_common
isr_55:
    pushq $0
    pushq $55
    jmp isr_common
isr_56:
    pushq $0
    pushq $56
    jmp isr_common
isr_57:
    pushq $0
    pushq $57
    jmp isr_common
isr_58:
    pushq $0
    pushq $58
    jmp isr_common
isr_59:
    pushq $0
    pushq $59
    jmp isr_common
isr_60:
    pushq $0
    pushq $60
    jmp isr_common
isr_61:
    pushq $0
    pushq $61
    jmp isr_common
isr_62:
    pushq $0
    pushq $62
    jmp isr_common
isr_63:
    pushq $0
    pushq $63
    jmp isr_common
isr_255:
    pushq $0
    pushq $255
    jmp isr_common

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call skiff_isr_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

    .section .rodata.isr_table, "a"
    .balign 8
    .global skiff_isr_table
skiff_isr_table:
    .quad isr_0
    .quad isr_1
    .quad isr_2
    .quad isr_3
    .quad isr_4
    .quad isr_5
    .quad isr_6
    .quad isr_7
    .quad isr_8
    .quad isr_9
    .quad isr_10
    .quad isr_11
    .quad isr_12
    .quad isr_13
    .quad isr_14
    .quad isr_15
    .quad isr_16
    .quad isr_17
    .quad isr_18
    .quad isr_19
    .quad isr_20
    .quad isr_21
    .quad isr_22
    .quad isr_23
    .quad isr_24
    .quad isr_25
    .quad isr_26
    .quad isr_27
    .quad isr_28
    .quad isr_29
    .quad isr_30
    .quad isr_31
    .quad isr_32
    .quad isr_33
    .quad isr_34
    .quad isr_35
    .quad isr_36
    .quad isr_37
    .quad isr_38
    .quad isr_39
    .quad isr_40
    .quad isr_41
    .quad isr_42
    .quad isr_43
    .quad isr_44
    .quad isr_45
    .quad isr_46
    .quad isr_47
    .quad isr_48
    .quad isr_49
    .quad isr_50
    .quad isr_51
    .quad isr_52
    .quad isr_53
    .quad isr_54
    .quad isr_55
    .quad isr_56
    .quad isr_57
    .quad isr_58
    .quad isr_59
    .quad isr_60
    .quad isr_61
    .quad isr_62
    .quad isr_63
    .quad isr_255
