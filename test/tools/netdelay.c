/*
 * netdelay QUEUE DELAY_MS [LOSS_PERCENT]: adds latency (and loss) to the packets an iptables
 * NFQUEUE rule sends to queue QUEUE, for kernels without tc netem (CONFIG_NET_SCH_NETEM unset, as
 * here). Each packet is held DELAY_MS and then accepted (or, with probability LOSS_PERCENT, dropped),
 * in arrival order. Runs in the network namespace whose packets it delays; pair it with
 *   iptables -A OUTPUT -o eth0 -j NFQUEUE --queue-num QUEUE --queue-bypass
 * so that traffic flows undelayed again when it exits. A test tool: built by test/helpers/netns.ts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING 65536

static struct held { uint32_t id; int64_t due_us; } ring[RING];
static unsigned head, tail;
static int64_t delay_us;

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
  (void)msg; (void)data;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (ph == NULL) return 0;
  uint32_t id = ntohl(ph->packet_id);
  if (tail - head >= RING) return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL); /* full: pass undelayed */
  ring[tail % RING] = (struct held){ id, now_us() + delay_us };
  tail++;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: netdelay QUEUE DELAY_MS [LOSS_PERCENT]\n"); return 2; }
  int queue = atoi(argv[1]);
  delay_us = (int64_t)atoi(argv[2]) * 1000;
  double loss = argc > 3 ? atof(argv[3]) / 100.0 : 0;
  srand((unsigned)now_us());
  signal(SIGPIPE, SIG_IGN);
  struct nfq_handle *h = nfq_open();
  if (h == NULL) { perror("nfq_open"); return 1; }
  struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
  if (qh == NULL) { perror("nfq_create_queue"); return 1; }
  if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) { perror("nfq_set_mode"); return 1; }
  nfq_set_queue_maxlen(qh, RING);
  int fd = nfq_fd(h);
  char buf[65536];
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int64_t wait_ms = -1;
    if (head != tail) {
      int64_t left = ring[head % RING].due_us - now_us();
      wait_ms = left <= 0 ? 0 : (left + 999) / 1000;
    }
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r = poll(&p, 1, (int)wait_ms);
    if (r < 0 && errno != EINTR) { perror("poll"); return 1; }
    if (r > 0) {
      ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) nfq_handle_packet(h, buf, (int)n);
      else if (n < 0 && errno != EAGAIN && errno != ENOBUFS) { perror("recv"); return 1; }
    }
    int64_t now = now_us();
    while (head != tail && ring[head % RING].due_us <= now) {
      int drop = loss > 0 && (double)rand() / RAND_MAX < loss;
      nfq_set_verdict(qh, ring[head % RING].id, drop ? NF_DROP : NF_ACCEPT, 0, NULL);
      head++;
    }
  }
}
