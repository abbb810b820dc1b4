/*
 * plasmon's shared-memory fast path (issue 12): the pin protocol between
 * clients that get objects without a round trip and the store that deletes,
 * evicts and reuses their memory. A model for the SPIN model checker; the
 * design it checks is docs/FAST_PATH.md. tests/model/check.sh runs it, and
 * runs each planted bug (-DBUG_...) to show that the check can fail.
 *
 * The parts, as the implementation will have them:
 *   - the store's shared index (clients map it read-only): per object slot
 *     one 64-bit state word holding (generation, state), written only by the
 *     store. Modelled as `gen` and `state`, always read together (one load).
 *   - each client's pin page (only that client writes it; the store reads):
 *     pin slots holding the generation pinned (0: none). One pin slot per
 *     client here: a client's slots are independent of each other.
 *   - the client's socket: a "released" nudge to the store (chan nudge), and
 *     the kernel's close when the client dies (chan closed).
 * SPIN's interleavings are sequentially consistent. The implementation gets
 * the same for the two racing pairs (the client's pin store and its reload
 * of the state word; the store's GOING store and its scan of the pins) by
 * making those four accesses memory_order_seq_cst: the store-buffering
 * reordering that would break this Dekker-style handshake is then forbidden.
 *
 * Checked properties (assertions and, by SPIN's default, no invalid end
 * state, i.e. no store left waiting for a release that never comes):
 *   P1 memory is never freed or reused while a pin validated against it
 *      stands (assert in Client's use);
 *   P2 a killed client's pins are always cleared: the store never waits
 *      forever on a dead client's pin (no invalid end state);
 *   P3 a get never returns an object whose Delete had returned before the
 *      get published its pin (assert at the get's success).
 */

#define NCLIENTS 3
/* The bounds (the search is exhaustive within them: some 8.5 million
 * states, 15-60 s, 0.5 GB). Not covered by them, and left to the stress tests: a
 * client reusing a pin slot, several pins per client, several slots, a
 * stale nudge meeting a later delete. */
#define ROUNDS 1      /* objects the store deletes in the slot, each reused: ABA */
#define GETS 1        /* fast gets per client */

#define SEALED 1
#define GOING 2       /* deleted or being evicted: no new pins; freed once unpinned */

byte gen = 1;         /* the slot's generation (the high bits of the state word) */
byte state = SEALED;  /* the slot's state (its low bits) */
byte pin_gen[NCLIENTS];  /* client c's pin slot */

/* ghosts: what the checks look at, not part of the protocol */
byte mem_gen = 1;     /* the generation whose bytes the memory holds; 0: freed */
bool deleted[ROUNDS + 2];  /* Delete of generation g returned to its caller */
bool kill[NCLIENTS];

/* The sockets, as counts and flags (their order does not matter, and
 * channels would multiply the states by every order): */
byte nudges;             /* client -> store: "a pin of a GOING object released" */
bool closed[NCLIENTS];   /* kernel -> store: the client's socket closed */

/* Ends a pin: clear it, then (seq_cst) look whether the store waits for it,
 * and if so tell it on the socket. The planted bug looks first and clears
 * after: the store can scan between the two, see the pin, and wait for a
 * nudge that the client decided not to send. (Each atomic step below holds
 * one access to shared memory, with the local work around it: the
 * interleavings that matter, and no others.) */
inline unpin(c, g) {
#ifdef BUG_LOOK_BEFORE_UNPIN
  atomic { look_gen = gen; look_state = state };
  pin_gen[c] = 0;
  atomic {
#else
  pin_gen[c] = 0;
  atomic {
    look_gen = gen;
    look_state = state;
#endif
    if
    :: look_gen == g && look_state == GOING -> nudges++
    :: else
    fi;
    look_gen = 0;
    look_state = 0
  }
}

proctype Client(byte c) {
  byte g1, s1, g2, s2, look_gen, look_state, n = 0;
  bool ok;
  bool deleted_at_pin;  /* ghost: the Delete of g1 had returned when the pin went up */
  {
    do
    :: n < GETS ->
      /* A fast get: read the state word (acquire; then the index entry's
       * fields), publish the pin, read the word again. */
      atomic { g1 = gen; s1 = state; n++ };
      if
      :: atomic { s1 == SEALED -> pin_gen[c] = g1; deleted_at_pin = deleted[g1] };
        atomic {
#ifdef BUG_NO_REVALIDATE
          g2 = g1;
          s2 = s1;
#else
          g2 = gen;
          s2 = state;
#endif
#ifdef BUG_NO_GENERATION
          g2 = g1;  /* compares the state only: blind to a reuse in between */
#endif
          ok = g2 == g1 && s2 == SEALED;
          g2 = 0;
          s2 = 0
        };
        if
        :: atomic { ok ->
#ifdef REACH_SUCCESS
            assert(false);  /* check.sh: a get can succeed (P1 and P3 are not vacuous) */
#endif
            assert(!deleted_at_pin);  /* P3 */
            /* Reads the object's bytes while pinned... */
            assert(mem_gen == g1) };  /* P1 */
          assert(mem_gen == g1)       /* ...and still, later in the read */
        :: else  /* changed under it: let go (the store may have seen the pin) */
        fi;
        unpin(c, g1)
      :: else  /* not there: the socket path (not modelled) */
      fi;
      d_step { g1 = 0; s1 = 0; ok = false; deleted_at_pin = false }
    :: else -> break
    od;
    /* Done, and still connected: idle for as long as it likes. A store
     * that waits for this client now waits forever (an invalid end state). */
end_idle:
    false
  } unless {
    kill[c] ->  /* SIGKILL, at any instruction */
      closed[c] = true
  }
}

/* SIGKILLs clients 0 and 1, either or both, at any moment; client 2 lives
 * through every run (killing it too multiplies the states by 3.5 and adds
 * no case: the clients are alike). Spelled out: select() would add states
 * of its own. */
proctype Killer() {
  do
  :: kill[0] = true
  :: kill[1] = true
  :: break
  od
}

/* The store's reaction to a closed socket (take_close below marks it
 * handled): that client's pin page is forgotten, with every pin in it (the
 * page is unmapped and never read again). The planted bug keeps reading it. */
#ifndef BUG_KEEP_DEAD_PINS
#define FORGOTTEN(c) handled[c]
#else
#define FORGOTTEN(c) false
#endif

/* True if some live pin page holds generation `g`: what the store scans
 * before it frees memory (seq_cst loads). */
inline pinned(g, busy) {
  busy = false;
  i = 0;
  do
  :: i < NCLIENTS ->
     if
     :: pin_gen[i] == g && !FORGOTTEN(i) -> busy = true
     :: else
     fi;
     i++
  :: else -> i = 0; break
  od
}

/* A closed socket the store has not handled yet (a guard: spelled out for
 * NCLIENTS = 3), and taking one. */
#define UNHANDLED_CLOSE \
  ((closed[0] && !handled[0]) || (closed[1] && !handled[1]) || (closed[2] && !handled[2]))
inline take_close(c) {
  d_step {
    c = 0;
    do
    :: closed[c] && !handled[c] -> break
    :: else -> c++
    od;
    handled[c] = true
  }
}

proctype Store() {
  byte c, i, round = 0;
  bool busy;
  bool handled[NCLIENTS];  /* closed sockets seen */
  do
  :: round < ROUNDS ->
    /* Delete (or evict): no new pins from here; Delete returns now (the
     * store's deferred delete). */
    atomic { state = GOING; deleted[gen] = true };
#ifdef BUG_NO_SCAN
    busy = false;
#else
    pinned(gen, busy);
#endif
    do
    :: busy ->
#ifdef REACH_WAIT
      assert(false);  /* check.sh: the store does wait for pins */
#endif
      /* Pinned: wait for a release or a death, then look again. */
      if
      :: nudges > 0 -> nudges--
      :: UNHANDLED_CLOSE -> take_close(c)
      fi;
      pinned(gen, busy)
    :: else -> break
    od;
    /* Free the memory, then reuse the slot and the memory for a new object
     * under a new generation. */
    mem_gen = 0;
    atomic { gen++; mem_gen = gen; state = SEALED };
    round++
  :: else -> break
  od;
  /* Keeps serving its sockets: nudges of late releases, closes. */
end_serving:
  do
  :: nudges > 0 -> nudges--
  :: UNHANDLED_CLOSE -> take_close(c)
  od
}

init {
  atomic {
    run Store();
    run Client(0);
    run Client(1);
    run Client(2);
    run Killer()
  }
}
