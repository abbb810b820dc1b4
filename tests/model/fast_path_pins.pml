/*
 * plasmon's shared-memory fast path (issue 12): the pin protocol between
 * clients that get objects without a round trip and the store that deletes,
 * evicts and reuses their memory. A model for the SPIN model checker; the
 * design it checks is docs/FAST_PATH.md. tests/model/check.sh runs it, and
 * runs each planted bug (-DBUG_...) to show that the check can fail.
 *
 * The parts, as the implementation has them:
 *   - the store's shared index (core/shm_index.h; clients map it read-only):
 *     per object slot one 64-bit state word holding (generation, state),
 *     written only by the store. Modelled as `gen` and `state`, always read
 *     together (one load).
 *   - each client's pin page (core/shm_index.h; only that client writes its
 *     pin slots, the store reads them): pin slots holding the generation
 *     pinned (0: none), and the `revoked` flag, which only the store writes.
 *     One pin slot per client here: a client's slots are independent of
 *     each other.
 *   - the store's side (store/fast_path.cc): the scan of the pin pages
 *     before a free, the list of pages it still reads (a dead client's is
 *     forgotten, a revoked client's is kept until it is empty).
 *   - the client's socket: a "released" nudge to the store (`nudges`), and
 *     the kernel's close when the client dies (`closed`).
 * SPIN's interleavings are sequentially consistent. The implementation gets
 * the same for the three racing pairs (the client's pin store and its reload
 * of the state word; the store's GOING store and its scan of the pins; the
 * store's `revoked` store and its scan of that page, against the client's
 * pin store and its load of `revoked`) by making those accesses
 * memory_order_seq_cst: the store-buffering reordering that would break
 * these Dekker-style handshakes is then forbidden.
 *
 * Checked properties (assertions and, by SPIN's default, no invalid end
 * state, i.e. no store left waiting for a release that never comes):
 *   P1 memory is never freed or reused while a pin validated against it
 *      stands, a revoked client's pins included (assert in Client's use);
 *   P2 a killed client's pins are always cleared, and a revoked client's
 *      page is read until it clears its pins or dies: the store never
 *      waits forever (no invalid end state);
 *   P3 a get never returns an object whose Delete had returned before the
 *      get published its pin (assert at the get's success);
 *   P4 an eviction attempt never frees an object while a validated pin of
 *      it stands (assert at the eviction's free: P1 again, from the store's
 *      side, so that the eviction path is known to be covered).
 */

#define NCLIENTS 3
#define RC 1          /* the client that the store may revoke (it may also be killed) */
/* The bounds (the search is exhaustive within them: some 9 million states,
 * under 35 s, 0.5 GB; docs/FAST_PATH.md). Not covered by them, and left to the
 * stress tests: a client reusing a pin slot, several pins per client,
 * several slots, a stale nudge meeting the delete of a reused slot's next
 * object (one of a reverted eviction meeting the same object's delete is
 * covered), more than one revoked client. */
#define ROUNDS 1      /* objects the store deletes or evicts in the slot, each reused: ABA */
#define EVICT_TRIES 2 /* eviction attempts before the delete (each frees, or finds a pin and reverts) */
#define GETS 1        /* fast gets per client */

#define SEALED 1
#define GOING 2       /* deleted or being evicted: no new pins; freed once unpinned */

byte gen = 1;         /* the slot's generation (the high bits of the state word) */
byte state = SEALED;  /* the slot's state (its low bits) */
byte pin_gen[NCLIENTS];  /* client c's pin slot */
bool revoked;         /* client RC's pin page's revoked flag */

/* ghosts: what the checks look at, not part of the protocol */
byte obj = 1;         /* the object the slot's fields name, by the generation it was
                       * created under (gen, except under BUG_REVERT_NEW_GEN) */
byte mem_gen = 1;     /* the object whose bytes the memory holds; 0: freed */
byte held[NCLIENTS];  /* the object client c reads under a validated pin; 0: none */
bool deleted[ROUNDS + EVICT_TRIES + 2];  /* Delete of generation g returned to its caller */
bool kill[NCLIENTS];

/* The sockets, as counts and flags (their order does not matter, and
 * channels would multiply the states by every order): */
byte nudges;             /* client -> store: "a pin of a GOING object released" */
bool closed[NCLIENTS];   /* the client died: its socket closed (kernel -> store); for
                          * a revoked client, whose socket the store closed, the
                          * store's own watch on the process (a pidfd) */

/* Ends a pin: clear it, then (seq_cst) look whether the store waits for it,
 * and if so tell it on the socket. The planted bug looks first and clears
 * after: the store can scan between the two, see the pin, and wait for a
 * nudge that the client decided not to send. A revoked client's nudge is
 * lost (the store closed the socket: the send fails, and the store relies
 * on its rescans; `revoked` stands for the socket's state there, not for a
 * load). (Each atomic step below holds one access to shared memory, with
 * the local work around it: the interleavings that matter, and no others;
 * the store's scan is the one exception, see pinned.) */
inline unpin(c, g) {
#ifdef BUG_LOOK_BEFORE_UNPIN
  atomic { look_gen = gen; look_state = state };
  d_step { pin_gen[c] = 0; held[c] = 0 };
  atomic {
#else
  d_step { pin_gen[c] = 0; held[c] = 0 };
  atomic {
    look_gen = gen;
    look_state = state;
#endif
    if
    :: look_gen == g && look_state == GOING && !(c == RC && revoked) -> nudges++
    :: else
    fi;
    look_gen = 0;
    look_state = 0
  }
}

proctype Client(byte c) {
  byte g1, s1, o1, g2, s2, look_gen, look_state, n = 0;
  bool ok;
  bool deleted_at_pin;  /* ghost: the Delete of g1 had returned when the pin went up */
  {
    do
    :: n < GETS ->
      /* A fast get: read the state word (acquire; then the index entry's
       * fields, o1), publish the pin, read the word again. */
      atomic { g1 = gen; s1 = state; o1 = obj; n++ };
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
#ifndef BUG_NO_REVOKED_LOAD
        /* Then the page's revoked flag (seq_cst): revoked, the store may
         * have stopped reading this page, so the pin may not be honoured. */
        if
        :: c == RC -> ok = ok && !revoked
        :: else
        fi;
#endif
        if
        :: atomic { ok ->
#ifdef REACH_SUCCESS
            assert(false);  /* check.sh: a get can succeed (P1 and P3 are not vacuous) */
#endif
            assert(!deleted_at_pin);  /* P3 */
            /* Reads the object's bytes while pinned... */
            held[c] = o1;
            assert(mem_gen == o1) };  /* P1 */
          assert(mem_gen == o1)       /* ...and still, later in the read */
        :: else  /* changed under it, or revoked: let go (the store may have
                  * seen the pin); the socket path (not modelled) */
        fi;
        unpin(c, g1)
      :: else  /* not there, or going: the socket path (not modelled) */
      fi;
      d_step { g1 = 0; s1 = 0; o1 = 0; ok = false; deleted_at_pin = false }
    :: else -> break
    od;
    /* Done, and still connected: idle for as long as it likes. A store
     * that waits for this client now waits forever (an invalid end state). */
end_idle:
    false
  } unless {
    kill[c] ->  /* SIGKILL, at any instruction */
      d_step { closed[c] = true; held[c] = 0 }
  }
}

/* SIGKILLs client RC, or not, at any moment: before its revocation (an
 * ordinary death: the socket closes), after it (the store's watch on the
 * process), or never. The other two live through every run: killing them
 * too multiplies the states and adds no case, the clients being alike and
 * their pages independent (the model of the review killed two of three:
 * it checked the same cases). */
proctype Killer() {
  if
  :: kill[RC] = true
  :: true
  fi
}

/* The pages the store no longer reads: a dead client's (take_close below
 * marks its death handled: the page is unmapped and never read again, with
 * every pin in it), and the revoked client's once it found it empty
 * (`forgot`). The planted bug keeps reading dead clients' pages. */
#ifndef BUG_KEEP_DEAD_PINS
#define FORGOTTEN(c) (handled[c] || (c == RC && forgot))
#else
#define FORGOTTEN(c) (c == RC && forgot)
#endif

/* True if some page the store reads holds generation `g`: what the store
 * scans before it frees memory (store/fast_path.cc; seq_cst loads, one page
 * after another). One step here: the scan's only result is whether it saw
 * a pin, and a pin that reading the pages one by one could miss and one
 * instant could not is one published after the GOING store (its reload
 * fails) or cleared before its page was read: never a validated pin. (Three
 * steps would triple the states.) */
inline pinned(g, busy) {
  d_step {
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
}

/* A death the store has not handled yet (a guard: spelled out for
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

/* Revocation: the store closes a live client's socket itself (a protocol
 * error, a full backlog; the store's choice, at any of its steps), while
 * the process may still be running and pinning. It sets the page's revoked
 * flag (seq_cst; one step with the close: a nudge sent in between is lost
 * either way), then scans the page: empty, it forgets the page at once;
 * otherwise it keeps honouring every pin in it, rescanning on a timer, until
 * the page is empty or the process dies. The timer is modelled by its only
 * rescans that change anything: those that find the page empty (REVOKED_EMPTY).
 * The planted bug forgets the page at revocation, as for a dead client. */
#define CAN_REVOKE (!revoked && !handled[RC])
#define REVOKED_EMPTY (revoked && !FORGOTTEN(RC) && pin_gen[RC] == 0)
inline revoke() {
  revoked = true;
#ifdef BUG_FORGET_REVOKED
  forgot = true
#else
  if
  :: pin_gen[RC] == 0 -> forgot = true
  :: else
  fi
#endif
}

/* Frees the slot's memory, then reuses the slot and the memory for a new
 * object under a new generation. */
inline free_and_reuse() {
  mem_gen = 0;
  atomic { gen++; obj = gen; mem_gen = gen; state = SEALED };
  round++
}

proctype Store() {
  byte c, i, round = 0, tries = 0;
  bool busy, forgot;
  bool handled[NCLIENTS];  /* deaths seen */
  do
  :: round < ROUNDS ->
    if
    :: atomic { state = GOING; deleted[gen] = true } ->
      /* Delete: no new pins from here; Delete returns now (the store's
       * deferred delete). */
#ifdef BUG_NO_SCAN
      busy = false;
#else
      pinned(gen, busy);
#endif
      do
      :: busy ->
#ifdef REACH_REVOKED_WAIT
        /* check.sh: the store waits for pins, a revoked client's too */
        assert(!(revoked && !FORGOTTEN(RC) && pin_gen[RC] == gen));
#endif
        /* Pinned: wait for a release, a death or a revoked page's
         * emptying, then look again. The planted bug waits for the
         * revoked client's nudge, which cannot come. */
        if
        :: nudges > 0 -> nudges--
        :: UNHANDLED_CLOSE -> take_close(c)
#ifndef BUG_REVOKED_NO_RESCAN
        :: atomic { REVOKED_EMPTY -> forgot = true }
#endif
        :: CAN_REVOKE -> revoke()
        fi;
        pinned(gen, busy)
      :: else -> break
      od;
      free_and_reuse()
    :: tries < EVICT_TRIES ->
      /* An eviction attempt: no new pins from here. */
      atomic { state = GOING; tries++ };
#ifdef BUG_EVICT_NO_SCAN
      busy = false;
#else
      pinned(gen, busy);
#endif
      if
      :: busy ->
        /* Pinned: no wait. The object stays, under the same generation;
         * new pins validate again, and a later attempt may succeed. The
         * planted bug bumps the generation, so that a pin validated before
         * no longer matches the next scan. */
#ifdef REACH_REVERT_HELD
        /* check.sh: an attempt reverts while a validated pin stands */
        assert(!(held[0] == mem_gen || held[1] == mem_gen || held[2] == mem_gen));
#endif
#ifdef BUG_REVERT_NEW_GEN
        atomic { gen++; state = SEALED }
#else
        state = SEALED
#endif
      :: else ->
#ifdef REACH_EVICT_FREE
        assert(false);  /* check.sh: an eviction does free (P4 is not vacuous) */
#endif
        assert(held[0] != mem_gen && held[1] != mem_gen && held[2] != mem_gen);  /* P4 */
        free_and_reuse()
      fi
    :: CAN_REVOKE -> revoke()
    fi
  :: else -> break
  od;
  /* Keeps serving its sockets: nudges of late releases, deaths. (Nothing
   * it does from here touches memory: a revocation now adds no case.) */
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
