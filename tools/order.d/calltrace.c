/*
 * calltrace.so: records the first call of every function of the main executable.
 *
 * Loaded with LD_PRELOAD by tools/order-functions, never shipped. Before main runs
 * it writes an int3 over the first byte of each function listed in $CALLTRACE_FUNCS
 * (link-time addresses in hex, ascending); the first time a function is entered the
 * trap handler puts the byte back, appends the address to $CALLTRACE_OUT and resumes
 * the function. The result is the set of functions the run executed, in first-call
 * order.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

static unsigned long *functions;
static unsigned char *savedBytes;
static size_t functionCount;
static unsigned long loadBias, textStart, textEnd;
static int outputFD = -1;

static int findText(struct dl_phdr_info *info, size_t size, void *unused) {
    (void)size;
    (void)unused;
    if (info->dlpi_name[0] != '\0') return 0; /* the main executable only */
    loadBias = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        if (segment->p_type == PT_LOAD && (segment->p_flags & PF_X)) {
            textStart = (loadBias + segment->p_vaddr) & ~4095UL;
            textEnd = (loadBias + segment->p_vaddr + segment->p_memsz + 4095) & ~4095UL;
        }
    }
    return 1;
}

static void appendHex(unsigned long value) {
    char digits[20], line[20];
    int count = 0, length = 0;
    do {
        digits[count++] = "0123456789abcdef"[value & 15];
        value >>= 4;
    } while (value != 0);
    while (count > 0) line[length++] = digits[--count];
    line[length++] = '\n';
    (void)!write(outputFD, line, (size_t)length);
}

static void onTrap(int signal, siginfo_t *info, void *contextPointer) {
    (void)info;
    ucontext_t *context = contextPointer;
    unsigned long instruction = (unsigned long)context->uc_mcontext.gregs[REG_RIP] - 1;
    unsigned long address = instruction - loadBias;
    size_t low = 0, high = functionCount;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (functions[middle] < address) low = middle + 1; else high = middle;
    }
    if (low < functionCount && functions[low] == address) {
        *(volatile unsigned char *)instruction = savedBytes[low];
        context->uc_mcontext.gregs[REG_RIP] = (greg_t)instruction;
        appendHex(address);
        return;
    }
    /* not one of ours: a real breakpoint or a crash */
    struct sigaction fallback = {.sa_handler = SIG_DFL};
    sigaction(signal, &fallback, NULL);
    raise(signal);
}

__attribute__((constructor)) static void installTraps(void) {
    const char *input = getenv("CALLTRACE_FUNCS"), *output = getenv("CALLTRACE_OUT");
    if (input == NULL || output == NULL) return;
    FILE *list = fopen(input, "r");
    if (list == NULL) { perror(input); _exit(97); }
    size_t capacity = 1 << 17;
    functions = malloc(capacity * sizeof *functions);
    unsigned long address;
    while (fscanf(list, "%lx", &address) == 1) {
        if (functionCount == capacity) {
            capacity *= 2;
            functions = realloc(functions, capacity * sizeof *functions);
        }
        functions[functionCount++] = address;
    }
    fclose(list);
    savedBytes = malloc(functionCount);
    outputFD = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (functions == NULL || savedBytes == NULL || outputFD < 0) { perror(output); _exit(97); }
    dl_iterate_phdr(findText, NULL);

    struct sigaction action = {.sa_sigaction = onTrap, .sa_flags = SA_SIGINFO | SA_NODEFER};
    sigaction(SIGTRAP, &action, NULL);
    if (mprotect((void *)textStart, textEnd - textStart, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) {
        perror("mprotect");
        _exit(97);
    }
    for (size_t i = 0; i < functionCount; i++) {
        unsigned char *entry = (unsigned char *)(loadBias + functions[i]);
        if ((unsigned long)entry < textStart || (unsigned long)entry >= textEnd) {
            savedBytes[i] = 0xCC;
            continue;
        }
        savedBytes[i] = *entry;
        *entry = 0xCC;
    }
}
