/* A userfaultfd user: 8 MiB of anonymous memory registered for missing faults, a handler thread
 * that fills each faulting page with UFFDIO_COPY, and a main thread that writes every page; then
 * 4 MiB more outside the registered range, written the same way. Prints "ready", waits on stdin.
 * (tests/test_record.py: the replay of its record must leave the registered range to base pages.) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static long uffd;
static char *fill;

static void *handler(void *arg) {
    long page = (long)arg;
    for (;;) {
        struct pollfd p = {.fd = (int)uffd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0) return NULL;
        struct uffd_msg msg;
        if (read((int)uffd, &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT) continue;
        struct uffdio_copy copy = {.dst = msg.arg.pagefault.address & ~(page - 1), .src = (unsigned long)fill,
                                   .len = (unsigned long)page, .mode = 0};
        ioctl((int)uffd, UFFDIO_COPY, &copy);
    }
}

int main(void) {
    long page = sysconf(_SC_PAGESIZE);
    size_t size = 8 << 20, more = 4 << 20;
    fill = aligned_alloc(page, page);
    memset(fill, 7, page);
    uffd = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (uffd < 0) { perror("userfaultfd"); return 1; }
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl((int)uffd, UFFDIO_API, &api)) { perror("UFFDIO_API"); return 1; }
    char *area = mmap(NULL, size + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    area = (char *)(((unsigned long)area + (2 << 20) - 1) & ~((2UL << 20) - 1));
    struct uffdio_register reg = {.range = {.start = (unsigned long)area, .len = size},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl((int)uffd, UFFDIO_REGISTER, &reg)) { perror("UFFDIO_REGISTER"); return 1; }
    pthread_t t;
    pthread_create(&t, NULL, handler, (void *)page);
    for (size_t i = 0; i < size; i += page) area[i] = 1;
    char *other = mmap(NULL, more + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    other = (char *)(((unsigned long)other + (2 << 20) - 1) & ~((2UL << 20) - 1));
    for (size_t i = 0; i < more; i += page) other[i] = 1;
    printf("ready\n");
    fflush(stdout);
    getchar();
    return 0;
}
