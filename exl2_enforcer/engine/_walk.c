/* Native token walks over a lazily built DFA transition table, and the DFA's plain rows.
 *
 * The mask of a DFA state is the set of tokens whose bytes lead from it to a live
 * state.  engine/mask.py and engine/runs.py find those tokens with vectorised numpy
 * walks; every numpy call costs a few microseconds, so a walk that ends after a few
 * hundred nodes is dominated by call overhead.  The two loops here do the same walks
 * node by node in C:
 *
 *   trie_walk: depth-first over a token trie (tokens/trie.py), pruning a subtree as
 *              soon as its prefix is refused;
 *   groups_walk: over single tokens (runs.py's CSR token bytes) that leave a run of one
 *                byte set, each from the state its run leads to, the tokens of a group in
 *                the order of their bytes, stepping the bytes one shares with the one before
 *                it once (order_groups lays them out).
 *
 * The DFA is built lazily: a cell may be UNKNOWN (-2).  Then the walk calls
 * ``step(state, cls)`` (the automaton's ``step_row``), which computes it (and may replace
 * ``automaton.table`` by a larger array), and re-reads the table.  Given the automaton's row
 * context, the walk first builds the row itself with plain_row's code (direct_row, near the end
 * of the file): five Python frames per row fewer, the same row.  After each row, and every few
 * thousand steps, it calls ``check()``, which raises past a deadline (a row build is the
 * costliest chunk of a walk); an exception from any callback ends the walk and propagates.  Nothing here allocates Python objects per
 * step, and every index read from an input array is bounds-checked: a bad array gives
 * a ValueError, never a crash.
 *
 * plain_row (further down) computes most of those rows: see its comment.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEAD (-1)
#define UNKNOWN (-2)
#define CHECK_EVERY 4096

/* Whether a buffer format is one native-order integer code (numpy's int/uint dtypes): a float
 * of the same size would pass an itemsize check and be read as garbage. */
static int int_format(const char *f) {
    if (f == NULL) return 1; /* "B" */
    const uint16_t one = 1;
    const int little = *(const uint8_t *)&one;
    if (*f == '@' || *f == '=' || (*f == '<' && little) || (*f == '>' && !little)) f++;
    return f[0] != '\0' && f[1] == '\0' && strchr("bBhHiIlLqQnN", f[0]) != NULL;
}

/* Attribute names, interned once (PyObject_GetAttrString makes a new string per call). */
static PyObject *S_table, *S_depth, *S_configs, *S_generation, *S_row_done, *S_accepting;

struct NfaTab;

/* What plain_row_core needs to intern a new plain set itself, as Automaton._intern_plain does for a set
 * without repeated NFA states (Automaton.interner()'s tuple: the states list, the index dict, the
 * DfaState type and the byte estimates of a state, a configuration and a memo entry), borrowed. */
typedef struct {
    PyObject *states, *index, *state_type;
    long long state_b, config_b, memo_b;
} Interner;

/* A walk's direct row path (see direct_row): what Automaton.row_context gave, borrowed from the
 * context tuple (the walk's argument tuple holds it). */
typedef struct {
    struct NfaTab *t;
    PyObject *states, *plain_memo, *escape_memo, *made, *intern, *escape, *interner;
    long long max_depth, generation;
    Interner in; /* ``interner`` read (when with_in) */
    int with_in;
} RowCtx;

typedef struct {
    PyObject *automaton;
    PyObject *step_class; /* bound method */
    PyObject *table_obj;  /* the array the buffer below belongs to */
    PyObject *check;      /* called after each computed cell: a row build is a chunk of work */
    RowCtx *rows;         /* NULL: every missing row through ``step_class`` */
    Py_buffer table;
    Py_ssize_t n_rows;
    Py_ssize_t n_classes;
} Dfa;

static int dfa_load_table(Dfa *d) {
    PyObject *obj = PyObject_GetAttr(d->automaton, S_table);
    if (obj == NULL) return -1;
    if (obj == d->table_obj) {
        Py_DECREF(obj);
        return 0;
    }
    if (d->table_obj != NULL) {
        PyBuffer_Release(&d->table);
        Py_CLEAR(d->table_obj);
    }
    if (PyObject_GetBuffer(obj, &d->table, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0) {
        Py_DECREF(obj);
        return -1;
    }
    d->table_obj = obj;
    if (d->table.itemsize != 4 || !int_format(d->table.format) || d->table.ndim != 2 ||
        d->table.shape[1] != d->n_classes) {
        PyErr_SetString(PyExc_ValueError, "automaton.table must be a C-contiguous int32 array (states, classes)");
        return -1;
    }
    d->n_rows = d->table.shape[0];
    return 0;
}

static int dfa_open(Dfa *d, PyObject *automaton, PyObject *step, PyObject *check, Py_ssize_t n_classes) {
    memset(d, 0, sizeof(*d));
    d->automaton = automaton;
    d->check = check;
    d->n_classes = n_classes;
    Py_INCREF(step);
    d->step_class = step;
    return dfa_load_table(d);
}

static void dfa_close(Dfa *d) {
    if (d->table_obj != NULL) {
        PyBuffer_Release(&d->table);
        Py_CLEAR(d->table_obj);
    }
    Py_CLEAR(d->step_class);
}

static int call_check(PyObject *check) {
    if (check == Py_None) return 0;
    PyObject *r = PyObject_CallNoArgs(check);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* A callback's answer ``got`` (a new reference, or NULL when it raised) as an int32 in
 * [``lo``, INT32_MAX]; -3, with an exception set, when it raised, is no int or is out of range
 * (``what`` names the callback in the message). */
static int32_t int32_result(PyObject *got, long lo, const char *what) {
    if (got == NULL) return -3;
    const long v = PyLong_AsLong(got);
    Py_DECREF(got);
    if (v == -1 && PyErr_Occurred()) return -3;
    if (v < lo || v > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s gave %ld", what, v);
        return -3;
    }
    return (int32_t)v;
}

static int direct_row(Dfa *d, int32_t sid);
static int rowctx_open(RowCtx *r, PyObject *ctx);

/* The state after a byte of class ``c`` in ``state``; DEAD if refused; -3 on error. */
static inline int32_t dfa_step(Dfa *d, int32_t state, int32_t c) {
    if (state < d->n_rows) {
        int32_t nxt = ((const int32_t *)d->table.buf)[(Py_ssize_t)state * d->n_classes + c];
        if (nxt >= DEAD) return nxt;
        if (nxt != UNKNOWN) { /* -3 would read as an error with no exception set, and below it as DEAD */
            PyErr_Format(PyExc_ValueError, "DFA table cell %d (state %d, class %d) is below UNKNOWN", (int)nxt,
                         (int)state, (int)c);
            return -3;
        }
    }
    /* an unknown cell: the row is not done (a done row has every cell) */
    const int direct = d->rows != NULL && state >= 0 && state < d->n_rows ? direct_row(d, state) : 0;
    if (direct < 0) return -3;
    int32_t v;
    if (direct) {
        if (dfa_load_table(d) < 0) return -3;
        v = state < d->n_rows ? ((const int32_t *)d->table.buf)[(Py_ssize_t)state * d->n_classes + c] : UNKNOWN;
        if (v < DEAD) {
            PyErr_Format(PyExc_ValueError, "the row of DFA state %d holds %d at class %d", (int)state, (int)v, (int)c);
            return -3;
        }
    } else {
        v = int32_result(PyObject_CallFunction(d->step_class, "ii", (int)state, (int)c), DEAD, "step");
        if (v == -3) return -3;
        if (dfa_load_table(d) < 0) return -3;
    }
    if (call_check(d->check) < 0) return -3;
    return v;
}

typedef struct {
    Py_buffer view;
    int held;
} Buf;

/* Acquire ``obj`` as a contiguous buffer of ``itemsize``-byte items (writable if asked). */
static int buf_get(Buf *b, PyObject *obj, Py_ssize_t itemsize, int writable, const char *name) {
    b->held = 0;
    if (obj == Py_None) {
        memset(&b->view, 0, sizeof(b->view));
        return 0;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    if (b->view.itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "%s must have %zd-byte items, got %zd", name, itemsize, b->view.itemsize);
        return -1;
    }
    if (!int_format(b->view.format)) {
        PyErr_Format(PyExc_ValueError, "%s must hold integers, got buffer format '%s'", name, b->view.format);
        return -1;
    }
    return 0;
}

static Py_ssize_t buf_len(const Buf *b) { return b->held ? b->view.len / b->view.itemsize : 0; }

static void buf_release(Buf *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

static int set_bit(uint32_t *words, Py_ssize_t n_words, int64_t id) {
    if (id < 0 || (id >> 5) >= n_words) {
        PyErr_Format(PyExc_ValueError, "token id %lld is outside the bitmask (%zd words)", (long long)id, n_words);
        return -1;
    }
    words[id >> 5] |= (uint32_t)1 << (id & 31);
    return 0;
}

static int bad_index(const char *what, long long v) {
    PyErr_Format(PyExc_ValueError, "%s %lld is out of range", what, v);
    return -1;
}

typedef struct {
    int32_t *v;
    Py_ssize_t n, cap;
} IntVec;

static int vec_reserve(IntVec *x, Py_ssize_t more) {
    if (x->n + more <= x->cap) return 0;
    Py_ssize_t cap = x->cap ? x->cap : 256;
    while (cap < x->n + more) cap *= 2;
    int32_t *p = realloc(x->v, sizeof(int32_t) * (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    x->v = p;
    x->cap = cap;
    return 0;
}

static int vec_push(IntVec *x, int32_t v) {
    if (x->n == x->cap && vec_reserve(x, 1) < 0) return -1;
    x->v[x->n++] = v;
    return 0;
}

/* A state's whitespace budget, cached per walk: how many more JSON whitespace bytes the whitespace
 * loop it sits at takes (``ws_budget(state)``), -1 when it sits at none.  -3 on error. */
typedef struct {
    PyObject *budget_fn, *advance_fn;
    int32_t *budget; /* per state, -2: not asked yet */
    Py_ssize_t n_budget;
    IntVec virt; /* per virtual state: (slice state, bytes read past it, materialised state or -3) */
} Ws;

static int32_t ws_budget(Dfa *d, Ws *w, int32_t state) {
    if (state >= w->n_budget) {
        Py_ssize_t cap = w->n_budget ? w->n_budget : 1024;
        while (cap <= state) cap *= 2;
        int32_t *p = realloc(w->budget, sizeof(int32_t) * (size_t)cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -3;
        }
        for (Py_ssize_t i = w->n_budget; i < cap; i++) p[i] = -2;
        w->budget = p;
        w->n_budget = cap;
    }
    if (w->budget[state] == -2) {
        const int32_t v = int32_result(PyObject_CallFunction(w->budget_fn, "i", (int)state), -1, "ws_budget");
        if (v == -3) return -3;
        w->budget[state] = v;
        if (dfa_load_table(d) < 0 || call_check(d->check) < 0) return -3;
    }
    return w->budget[state];
}

/* A new virtual state: ``m`` whitespace bytes read past slice state ``s``; its index, -3 on error. */
static int32_t ws_virtual(Ws *w, int32_t s, int32_t m) {
    if (w->virt.n > (Py_ssize_t)INT32_MAX - 3) {
        PyErr_SetString(PyExc_OverflowError, "too many virtual whitespace states");
        return -3;
    }
    const int32_t v = (int32_t)(w->virt.n / 3);
    if (vec_push(&w->virt, s) < 0 || vec_push(&w->virt, m) < 0 || vec_push(&w->virt, -3) < 0) return -3;
    return v;
}

/* The DFA state of virtual state ``v`` (made by ``ws_advance`` on first use); -3 on error. */
static int32_t ws_real(Dfa *d, Ws *w, int32_t v) {
    int32_t *rec = w->virt.v + 3 * (Py_ssize_t)v;
    if (rec[2] != -3) return rec[2];
    const int32_t r = int32_result(PyObject_CallFunction(w->advance_fn, "ii", (int)rec[0], (int)rec[1]), DEAD,
                                   "ws_advance (a DFA state)");
    if (r == -3) return -3;
    w->virt.v[3 * (Py_ssize_t)v + 2] = r;
    if (dfa_load_table(d) < 0 || call_check(d->check) < 0) return -3;
    return r;
}

PyDoc_STRVAR(trie_walk_doc,
"trie_walk(automaton, step, n_classes, class_of_byte, byte, child_lo, child_hi, tok_lo, tok_hi, tok_ids,\n"
"          start, words, out_ids, out_states, check, ws, ws_budget, ws_advance, rows=None) -> int\n\n"
"Walk the trie depth-first from DFA state ``start``; for every token whose bytes lead to a live\n"
"state, set its bit in ``words`` (uint32, or None) and append its id and end state to ``out_ids``\n"
"and ``out_states`` (int64, as long as ``tok_ids``, or None).  Returns the number of tokens found.\n"
"``ws`` (256 bytes flagging JSON whitespace, or None) lets whitespace runs skip DFA states: past a\n"
"state where ``ws_budget(state)`` (its whitespace loop's remaining count, -1 if none) is positive,\n"
"whitespace bytes only count, and ``ws_advance(state, count)`` gives the DFA state where another\n"
"byte follows them (``out_states`` must then be None).  ``rows``: None, or Automaton.row_context()'s\n"
"tuple, with which missing plain rows are built here rather than by ``step`` (which still builds\n"
"those plain_row leaves to the automaton, and every row after an eviction).");

/* Copy the 256 byte classes of ``cls`` into ``C`` and check each is below ``n_classes``; -1 (a
 * ValueError set) if not.  The walks read the copy: a callback runs Python between the check and a
 * read, and may rewrite the array. */
static int load_classes(int32_t C[256], const Buf *cls, Py_ssize_t n_classes) {
    memcpy(C, cls->view.buf, sizeof(int32_t) * 256);
    for (int k = 0; k < 256; k++)
        if (C[k] < 0 || C[k] >= n_classes) return bad_index("byte class", C[k]);
    return 0;
}

static PyObject *trie_walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *automaton, *step, *o_cls, *o_byte, *o_clo, *o_chi, *o_tlo, *o_thi, *o_tids, *o_words, *o_oids, *o_ost, *check;
    PyObject *o_ws, *ws_budget_fn, *ws_advance_fn, *o_rows = Py_None;
    Py_ssize_t n_classes;
    int start;
    if (!PyArg_ParseTuple(args, "OOnOOOOOOOiOOOOOOO|O", &automaton, &step, &n_classes, &o_cls, &o_byte, &o_clo,
                          &o_chi, &o_tlo, &o_thi, &o_tids, &start, &o_words, &o_oids, &o_ost, &check, &o_ws,
                          &ws_budget_fn, &ws_advance_fn, &o_rows))
        return NULL;
    RowCtx rc;
    const int with_rows = rowctx_open(&rc, o_rows);
    if (with_rows < 0) return NULL;
    Buf cls, byte, clo, chi, tlo, thi, tids, words, oids, ost, wsb;
    Buf *all[] = {&cls, &byte, &clo, &chi, &tlo, &thi, &tids, &words, &oids, &ost, &wsb};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) all[i]->held = 0;
    Dfa d;
    Ws w;
    memset(&w, 0, sizeof(w));
    w.budget_fn = ws_budget_fn;
    w.advance_fn = ws_advance_fn;
    int dfa_ok = 0;
    int32_t *stack = NULL;
    Py_ssize_t found = -1;
    if (buf_get(&cls, o_cls, 4, 0, "class_of_byte") < 0 || buf_get(&byte, o_byte, 1, 0, "byte") < 0 ||
        buf_get(&clo, o_clo, 4, 0, "child_lo") < 0 || buf_get(&chi, o_chi, 4, 0, "child_hi") < 0 ||
        buf_get(&tlo, o_tlo, 4, 0, "tok_lo") < 0 || buf_get(&thi, o_thi, 4, 0, "tok_hi") < 0 ||
        buf_get(&tids, o_tids, 4, 0, "tok_ids") < 0 || buf_get(&words, o_words, 4, 1, "words") < 0 ||
        buf_get(&oids, o_oids, 8, 1, "out_ids") < 0 || buf_get(&ost, o_ost, 8, 1, "out_states") < 0 ||
        buf_get(&wsb, o_ws, 1, 0, "ws") < 0)
        goto done;
    const Py_ssize_t n_nodes = buf_len(&byte), n_tok = buf_len(&tids), n_words = buf_len(&words);
    if (buf_len(&cls) != 256 || buf_len(&clo) != n_nodes || buf_len(&chi) != n_nodes || buf_len(&tlo) != n_nodes ||
        buf_len(&thi) != n_nodes || n_nodes < 1 || (wsb.held && buf_len(&wsb) != 256)) {
        PyErr_SetString(PyExc_ValueError, "trie arrays disagree in length (or class_of_byte or ws is not 256 long)");
        goto done;
    }
    if (start < 0) {
        PyErr_Format(PyExc_ValueError, "DFA state %d is out of range (start of the walk)", start);
        goto done;
    }
    if (wsb.held && ost.held) {
        PyErr_SetString(PyExc_ValueError, "whitespace runs give no end states: out_states must be None with ws");
        goto done;
    }
    /* out_ids/out_states hold each token once; a malformed trie naming a token twice must not overrun them */
    const Py_ssize_t out_cap = buf_len(&oids) < buf_len(&ost) ? buf_len(&oids) : buf_len(&ost);
    if ((oids.held || ost.held) && (buf_len(&oids) < n_tok || buf_len(&ost) < n_tok)) {
        PyErr_SetString(PyExc_ValueError, "out_ids and out_states must both hold every token of the trie");
        goto done;
    }
    dfa_ok = 1; /* dfa_open leaves ``d`` closable even when it fails */
    if (dfa_open(&d, automaton, step, check, n_classes) < 0) goto done_dfa;
    if (with_rows) d.rows = &rc;
    int32_t C[256];
    if (load_classes(C, &cls, n_classes) < 0) goto done_dfa;
    const int32_t *lo = clo.view.buf, *hi = chi.view.buf, *tl = tlo.view.buf, *th = thi.view.buf, *ti = tids.view.buf;
    const uint8_t *B = byte.view.buf, *WS = wsb.held ? wsb.view.buf : NULL;
    uint32_t *W = words.view.buf;
    int64_t *OI = oids.view.buf, *OS = ost.view.buf;
    /* entries (node, code): code >= 0 the DFA state of the node's parent, else virtual state -1 - code.
     * Each node of a tree is pushed at most once (it has one parent): the stack never outgrows
     * the trie; a push beyond it means child ranges overlap (checked below) */
    stack = malloc(sizeof(int32_t) * 2 * (size_t)n_nodes);
    if (stack == NULL) {
        PyErr_NoMemory();
        goto done_dfa;
    }
    Py_ssize_t sp = 0, n_out = 0, steps = 0;
    if (lo[0] == hi[0]) { /* an empty trie (no token at all) */
        found = 0;
        goto done_dfa;
    }
    if (lo[0] < 1 || hi[0] > n_nodes || lo[0] > hi[0]) {
        bad_index("root child range", lo[0]);
        goto done_dfa;
    }
    for (int32_t c = hi[0] - 1; c >= lo[0]; c--) {
        stack[2 * sp] = c;
        stack[2 * sp + 1] = start;
        sp++;
    }
    while (sp) {
        sp--;
        const int32_t node = stack[2 * sp], code = stack[2 * sp + 1];
        if (++steps % CHECK_EVERY == 0 && call_check(check) < 0) goto done_dfa;
        if (steps >= n_nodes) { /* a tree pops each non-root node once: more means a node has two parents */
            PyErr_Format(PyExc_ValueError, "child ranges of trie nodes overlap (node %d reached twice)", node);
            goto done_dfa;
        }
        const uint8_t b = B[node];
        int32_t state = DEAD, virt = -1; /* the node's DFA state, or its virtual state */
        int32_t from = code;             /* the DFA state to step from, if not virtual */
        if (code < 0) {
            const int32_t v = -1 - code, s = w.virt.v[3 * (Py_ssize_t)v], m = w.virt.v[3 * (Py_ssize_t)v + 1];
            if (WS[b]) {
                const int32_t budget = ws_budget(&d, &w, s);
                if (budget == -3) goto done_dfa;
                if (m < budget && (virt = ws_virtual(&w, s, m + 1)) == -3) goto done_dfa;
                from = -1; /* past the budget: refused */
            } else {
                from = ws_real(&d, &w, v);
                if (from == -3) goto done_dfa;
            }
        } else if (WS != NULL && WS[b]) {
            const int32_t budget = ws_budget(&d, &w, code);
            if (budget == -3) goto done_dfa;
            if (budget >= 1) {
                if ((virt = ws_virtual(&w, code, 1)) == -3) goto done_dfa;
                from = -1;
            }
        }
        if (from >= 0) {
            state = dfa_step(&d, from, C[b]);
            if (state == -3) goto done_dfa;
        }
        if (state < 0 && virt < 0) continue;
        if (tl[node] < 0 || th[node] > n_tok || tl[node] > th[node]) {
            bad_index("token range of trie node", node);
            goto done_dfa;
        }
        for (int32_t t = tl[node]; t < th[node]; t++) {
            if (W != NULL && set_bit(W, n_words, ti[t]) < 0) goto done_dfa;
            if (OI != NULL) {
                if (n_out >= out_cap) {
                    PyErr_SetString(PyExc_ValueError, "trie nodes name more tokens than tok_ids holds (token ranges overlap)");
                    goto done_dfa;
                }
                OI[n_out] = ti[t];
                if (OS != NULL) OS[n_out] = state; /* never virtual: ws is None with out_states */
            }
            n_out++;
        }
        if (lo[node] <= node || hi[node] > n_nodes || lo[node] > hi[node]) {
            if (lo[node] == hi[node]) continue; /* a leaf's empty range may point anywhere */
            bad_index("child range of trie node", node);
            goto done_dfa;
        }
        if (hi[node] - lo[node] > n_nodes - sp) {
            PyErr_Format(PyExc_ValueError, "child ranges of trie nodes overlap (at node %d)", node);
            goto done_dfa;
        }
        const int32_t next = virt >= 0 ? -1 - virt : state;
        for (int32_t c = hi[node] - 1; c >= lo[node]; c--) {
            stack[2 * sp] = c;
            stack[2 * sp + 1] = next;
            sp++;
        }
    }
    found = n_out;
done_dfa:
    if (dfa_ok) dfa_close(&d);
done:
    free(stack);
    free(w.budget);
    free(w.virt.v);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) buf_release(all[i]);
    if (found < 0) return NULL;
    return PyLong_FromSsize_t(found);
}

/* The token rows of a TokenBytes (engine/runs.py) and the bitmask their walks set. */
typedef struct {
    const int32_t *C; /* class of each byte */
    const uint8_t *F; /* the rows' bytes, concatenated */
    const int64_t *S, *L, *I; /* per row: start in F, length, token id */
    uint32_t *W;
    Py_ssize_t n_rows, n_flat, n_words;
    Py_ssize_t steps; /* bytes stepped so far: ``check`` runs every CHECK_EVERY */
} Rows;

/* Read row ``r`` from byte ``off`` on in DFA state ``q``: 1 (its bit set) when every byte leads to a
 * live state, 0 when one is refused, -1 on error. */
static int walk_row(Dfa *d, Rows *tk, int64_t r, int64_t off, int64_t q, PyObject *check) {
    if (r < 0 || r >= tk->n_rows) return bad_index("token row", r);
    const int64_t *S = tk->S, *L = tk->L;
    /* compared without adding first: a sum of two huge values would wrap */
    if (S[r] < 0 || S[r] > tk->n_flat || L[r] < 0 || L[r] > tk->n_flat - S[r] || off < 0 || off > L[r])
        return bad_index("byte range of token row", r);
    if (q < 0 || q > INT32_MAX) return bad_index("DFA state", q);
    int32_t state = (int32_t)q;
    for (int64_t p = S[r] + off, hi = S[r] + L[r]; p < hi; p++) {
        if (++tk->steps % CHECK_EVERY == 0 && call_check(check) < 0) return -1;
        state = dfa_step(d, state, tk->C[tk->F[p]]);
        if (state == -3) return -1;
        if (state < 0) return 0;
    }
    return set_bit(tk->W, tk->n_words, tk->I[r]) < 0 ? -1 : 1;
}

/* A group's token rows as order_groups lays them out (engine/runs.py RunTable.layout): per row i,
 * its token id ``I[i]``, how many of its bytes after the run it shares with row i - 1 of its group
 * (``P[i]``, 0 for a group's first row), and the bytes it does not, ``T[E[i - 1] : E[i]]`` (from 0
 * for i = 0). */
typedef struct {
    const int32_t *I, *E;
    const uint8_t *P, *T;
    Py_ssize_t n_T;
} Tails;


/* Read the rows ``lo:hi`` of ``t`` (one group) from DFA state ``q``, each to its end or to the first byte
 * refused, and set the bit of every row read to its end: how many did, -1 on error.
 *
 * The rows share the steps of their common prefixes: ``path->v[k]`` holds the state after the first k
 * bytes of the row before, for every k up to where it was read alive; row i goes on from
 * ``path->v[P[i]]`` with its own bytes, or dies without a step where the row before died on a byte they
 * share: the cells a walk row by row steps, a shared prefix's once.  Row indices, tail ranges and shared
 * prefixes are checked as they are read (a prefix longer than the row before was read alive: ValueError);
 * a layout that lies about the bytes gives a wrong mask, never a read outside the arrays. */
static Py_ssize_t walk_group(Dfa *d, Rows *tk, const Tails *t, int64_t lo, int64_t hi, int32_t q, IntVec *path,
                             PyObject *check) {
    if (vec_reserve(path, 1) < 0) return -1; /* the states after each byte of the row read last: a
                                                 * buffer (its count stays 0), as long as the longest row */
    path->v[0] = q;
    int64_t alive = 0; /* bytes of the row before read alive: path->v[0 .. alive] */
    int64_t died = -1; /* the byte it died on (then alive == died); -1: it was read to its end */
    Py_ssize_t kept = 0;
    for (int64_t i = lo; i < hi; i++) {
        const int64_t a = i > 0 ? t->E[i - 1] : 0, b = t->E[i];
        if (a < 0 || a > b || b > t->n_T) return bad_index("tail range of group row", i);
        int64_t k = t->P[i];
        if (died >= 0 && died < k) continue; /* the byte that ended the row before ends this one */
        if (k > alive) return bad_index("shared prefix of group row", i);
        const int64_t n = k + (b - a);
        if (vec_reserve(path, n + 1) < 0) return -1;
        const uint8_t *F = t->T + a - k; /* the row's byte j (from the group's offset on) is F[j], j >= k */
        int32_t state = path->v[k];
        for (; k < n; k++) {
            if (++tk->steps % CHECK_EVERY == 0 && call_check(check) < 0) return -1;
            /* a known cell inline; dfa_step (not inlined) for a row to build or a malformed cell */
            const int32_t c = tk->C[F[k]];
            int32_t nxt = state < d->n_rows ? ((const int32_t *)d->table.buf)[(Py_ssize_t)state * d->n_classes + c]
                                            : UNKNOWN;
            if (nxt < DEAD && (nxt = dfa_step(d, state, c)) == -3) return -1;
            if (nxt < 0) break;
            state = nxt;
            path->v[k + 1] = state;
        }
        alive = k;
        died = k < n ? k : -1;
        if (died < 0) {
            if (set_bit(tk->W, tk->n_words, t->I[i]) < 0) return -1;
            kept++;
        }
    }
    return kept;
}

/* A row's bytes from its group's offset on, as order_groups sorts them.  ``key`` caches 8 of them,
 * from byte ``kd`` of its segment on (big-endian, 0 past the end): the radix passes read it instead of
 * the bytes, scattered over the vocabulary's. */
typedef struct {
    uint64_t key;
    const uint8_t *p;
    int64_t n, row;
} Suffix;

typedef struct {
    Py_ssize_t lo, n;
    int64_t depth, kd; /* bytes all suffixes of the segment share; where their keys start */
} Segment;

static inline uint64_t suffix_key(const Suffix *a, int64_t from) {
    uint64_t k = 0;
    for (int64_t j = from; j < from + 8; j++) k = k << 8 | (j < a->n ? a->p[j] : 0);
    return k;
}

/* Whether ``a`` sorts before ``b``, both equal before byte ``kd`` and keyed from it. */
static int suffix_less(const Suffix *a, const Suffix *b, int64_t kd) {
    if (a->key != b->key) return a->key < b->key; /* 0 past an end: ends sort first */
    const int64_t n = a->n < b->n ? a->n : b->n;
    for (int64_t j = kd + 8; j < n; j++)
        if (a->p[j] != b->p[j]) return a->p[j] < b->p[j];
    return a->n < b->n;
}

/* Write the layout of one group's suffixes ``s[0:m]`` (see order_groups) at its rows ``lo:lo + m`` and its
 * tails from ``out[used]`` on; the end of its tails, or -1, writing part of it, where ``ordered`` says the
 * suffixes are in order and one is not (RunTable's groups of tokens that start outside the run's byte set
 * are: runs.TokenBytes orders the token rows by their bytes). */
static int64_t lay_out(const Suffix *s, int64_t m, int64_t lo, int ordered, const int64_t *ID, int64_t *R,
                       uint8_t *P, int32_t *MI, int32_t *E, uint8_t *out, int64_t used) {
    for (int64_t i = 0; i < m; i++) {
        int64_t k = 0;
        const uint8_t *p = s[i].p;
        if (i > 0) {
            const uint8_t *q = s[i - 1].p;
            const int64_t most = s[i].n < s[i - 1].n ? s[i].n : s[i - 1].n;
            while (k < most && p[k] == q[k]) k++;
            if (ordered && (k < most ? q[k] > p[k] : s[i - 1].n > s[i].n)) return -1;
            if (k > 255) k = 255;
        }
        for (int64_t j = k; j < s[i].n; j++) out[used++] = p[j];
        R[lo + i] = s[i].row;
        P[lo + i] = (uint8_t)k;
        MI[lo + i] = (int32_t)ID[s[i].row];
        E[lo + i] = (int32_t)used;
    }
    return used;
}

#define RADIX_MIN 32 /* segments with fewer rows are sorted by insertion */

/* The bucket of ``a`` at byte ``depth``: 0 where it ends, else 1 + the byte. */
static inline int suffix_bucket(const Suffix *a, int64_t depth, int64_t kd) {
    return a->n > depth ? 1 + (int)(a->key >> (56 - 8 * (depth - kd)) & 0xff) : 0;
}

/* Sort ``s[0:n]`` by their bytes, lexicographically: a most-significant-byte radix sort (the suffixes
 * that end at a depth first, then one bucket per byte value), segments of few rows by insertion.
 * ``tmp`` has room for ``n`` suffixes, ``seg`` for ``n / 2 + 1`` segments (those waiting are disjoint
 * and hold two rows or more each). */
static void sort_suffixes(Suffix *s, Suffix *tmp, Segment *seg, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) s[i].key = suffix_key(&s[i], 0);
    Py_ssize_t top = 0;
    if (n > 1) seg[top++] = (Segment){0, n, 0, 0};
    while (top > 0) {
        Segment g = seg[--top];
        Suffix *a = s + g.lo;
        if (g.depth == g.kd + 8) { /* the keys are spent: the next 8 bytes */
            for (Py_ssize_t i = 0; i < g.n; i++) a[i].key = suffix_key(&a[i], g.depth);
            g.kd = g.depth;
        }
        if (g.n < RADIX_MIN) {
            for (Py_ssize_t i = 1; i < g.n; i++) {
                const Suffix x = a[i];
                Py_ssize_t j = i;
                for (; j > 0 && suffix_less(&x, &a[j - 1], g.kd); j--) a[j] = a[j - 1];
                a[j] = x;
            }
            continue;
        }
        Py_ssize_t count[257] = {0};
        for (Py_ssize_t i = 0; i < g.n; i++) count[suffix_bucket(&a[i], g.depth, g.kd)]++;
        int only = -1; /* the bucket holding every suffix, if one does */
        for (int b = 0; b < 257 && only < 0; b++)
            if (count[b] == g.n) only = b;
        if (only == 0) continue; /* all end here: equal */
        if (only > 0) {          /* one byte for all: nothing moves */
            seg[top++] = (Segment){g.lo, g.n, g.depth + 1, g.kd};
            continue;
        }
        Py_ssize_t at[257], sum = 0;
        for (int b = 0; b < 257; b++) {
            at[b] = sum;
            sum += count[b];
        }
        for (Py_ssize_t i = 0; i < g.n; i++) tmp[at[suffix_bucket(&a[i], g.depth, g.kd)]++] = a[i];
        memcpy(a, tmp, sizeof(Suffix) * (size_t)g.n);
        for (int b = 1; b < 257; b++)
            if (count[b] > 1) seg[top++] = (Segment){g.lo + at[b] - count[b], count[b], g.depth + 1, g.kd};
    }
}

/* ---- plain rows ---------------------------------------------------------------------------
 *
 * Most DFA states of a compiled schema sit inside one machine (a key, a pattern, a format, a
 * number): none of their byte steps changes the stack.  Their rows are computed here from the
 * NFA: each configuration (NFA state, node) moves along its byte edges to the states with byte
 * edges its targets reach by epsilon moves, on the same node, if the node has room for their
 * completion depth.  The automaton (automaton.py) only interns the resulting sets.  A class where
 * some target's epsilon reach holds a call, a loop head or a machine end is left to the automaton.
 */
/* One automaton's NFA in class space, and the steps derived from it (kept for the automaton's life). */
typedef struct NfaTab {
    int32_t n, nc;
    int32_t *e_ptr, *e_clo, *e_chi, *e_t; /* byte edges of state q: e_ptr[q]..e_ptr[q+1], classes [clo, chi) */
    int32_t *p_ptr, *p_t;                 /* epsilon edges */
    uint8_t *special;                     /* calls, loop heads, machine ends: the stack changes there */
    int32_t *h;                           /* completion depth */
    int32_t *reach_at, *reach_len;        /* per state: its epsilon reach in ``reach`` (len -1: not plain) */
    IntVec reach;
    int32_t *row_at; /* per state: its steps in ``cells`` (-1: not tabulated) */
    /* per tabulated state: CUT_WORDS words of bits, set at each class whose cell differs from the
     * class before it, then per class (lo, hi) into succ/need (lo -2: not plain) */
    IntVec cells;
    IntVec succ, need;
    int32_t *stamp; /* per state: the search that last met it */
    int32_t stamp_now;
    IntVec todo;
    IntVec sets, set_at; /* scratch of plain_row: each class's configurations, and where they start */
    /* plain_row's other scratch, kept from row to row instead of eight mallocs per row (counted in
     * the derived bytes); a call made from inside another's callbacks (``busy``) allocates its own */
    void *scratch, *scratch2;
    size_t scratch_cap, scratch2_cap;
    int busy;
    Py_ssize_t rows, max_bytes; /* tabulating stops once the derived tables hold max_bytes */
    /* bytes of the DFA states and plain-memo entries plain_row_core interned itself (as the
     * automaton estimates them; it counts them in its state bytes), since the last clear */
    long long interned;
} NfaTab;

static void nfatab_free(NfaTab *t) {
    if (t == NULL) return;
    void *ps[] = {t->e_ptr, t->e_clo, t->e_chi, t->e_t, t->p_ptr, t->p_t, t->special, t->h, t->reach_at, t->reach_len,
                  t->reach.v, t->row_at, t->cells.v, t->succ.v, t->need.v, t->stamp, t->todo.v, t->sets.v, t->set_at.v,
                  t->scratch, t->scratch2};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
    free(t);
}

#define CUT_WORDS 8 /* 256 bits as int32 words: one per class */

#define NFA_CAPSULE "exl2_enforcer.nfa_tables"

static void nfatab_capsule_free(PyObject *cap) { nfatab_free(PyCapsule_GetPointer(cap, NFA_CAPSULE)); }

/* The copy of the NFA: fixed for the automaton's life, like the NFA itself. */
static Py_ssize_t nfatab_fixed_bytes(const NfaTab *t) {
    return (Py_ssize_t)sizeof(int32_t) * ((Py_ssize_t)t->e_ptr[t->n] * 3 + t->p_ptr[t->n] + 8 * (Py_ssize_t)t->n);
}

/* The steps derived from it: they grow with use and go with an eviction (nfatab_clear). */
static Py_ssize_t nfatab_derived_bytes(const NfaTab *t) {
    return (Py_ssize_t)sizeof(int32_t) *
               (t->reach.cap + t->cells.cap + t->succ.cap + t->need.cap + t->todo.cap + t->sets.cap + t->set_at.cap) +
           (Py_ssize_t)(t->scratch_cap + t->scratch2_cap);
}

static void vec_drop(IntVec *x) {
    free(x->v);
    x->v = NULL;
    x->n = x->cap = 0;
}

/* Forget every derived step, keeping the copy of the NFA. */
static void nfatab_clear(NfaTab *t) {
    IntVec *vs[] = {&t->reach, &t->cells, &t->succ, &t->need, &t->todo, &t->sets, &t->set_at};
    for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) vec_drop(vs[i]);
    if (!t->busy) { /* a row under way (this is one of its callbacks) still works in them */
        free(t->scratch);
        free(t->scratch2);
        t->scratch = t->scratch2 = NULL;
        t->scratch_cap = t->scratch2_cap = 0;
    }
    for (int32_t q = 0; q < t->n; q++) t->reach_at[q] = t->row_at[q] = -1;
    t->rows = 0;
    t->interned = 0;
}

static int32_t *copy_ints(const Buf *b, Py_ssize_t n) {
    int32_t *p = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (n) memcpy(p, b->view.buf, sizeof(int32_t) * (size_t)n);
    return p;
}

PyDoc_STRVAR(nfa_tables_doc,
"nfa_tables(n_classes, e_ptr, e_clo, e_chi, e_t, p_ptr, p_t, special, h, max_bytes) -> capsule\n\n"
"Copy an NFA (int32 arrays: byte edges in class space as CSR pointers, first class, end class and\n"
"target; epsilon edges as CSR pointers and target; per state a special flag and its completion depth)\n"
"into the tables plain_row steps with.  No more NFA states get their steps tabulated once the tables\n"
"derived from it (steps, epsilon reaches, scratch) hold ``max_bytes``: rows then go to the automaton.");

static PyObject *nfa_tables(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[8];
    Py_ssize_t nc, max_bytes;
    if (!PyArg_ParseTuple(args, "nOOOOOOOOn", &nc, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &max_bytes))
        return NULL;
    static const char *names[8] = {"e_ptr", "e_clo", "e_chi", "e_t", "p_ptr", "p_t", "special", "h"};
    Buf b[8];
    for (int k = 0; k < 8; k++) b[k].held = 0;
    NfaTab *t = NULL;
    PyObject *cap = NULL;
    for (int k = 0; k < 8; k++)
        if (buf_get(&b[k], o[k], 4, 0, names[k]) < 0) goto done;
    const Py_ssize_t n = buf_len(&b[0]) - 1;
    if (n < 0 || n > INT32_MAX / 4 || nc < 1 || nc > 256 || buf_len(&b[4]) != n + 1 || buf_len(&b[6]) != n ||
        buf_len(&b[7]) != n || buf_len(&b[1]) != buf_len(&b[3]) || buf_len(&b[2]) != buf_len(&b[3])) {
        PyErr_SetString(PyExc_ValueError, "NFA arrays disagree in length");
        goto done;
    }
    const int32_t *EP = b[0].view.buf, *PP = b[4].view.buf;
    const Py_ssize_t ne = buf_len(&b[3]), np_ = buf_len(&b[5]);
    if (EP[0] != 0 || PP[0] != 0 || EP[n] != ne || PP[n] != np_) {
        PyErr_SetString(PyExc_ValueError, "NFA edge pointers do not span the edge arrays");
        goto done;
    }
    for (Py_ssize_t q = 0; q < n; q++)
        if (EP[q] > EP[q + 1] || PP[q] > PP[q + 1]) {
            PyErr_SetString(PyExc_ValueError, "NFA edge pointers must not decrease");
            goto done;
        }
    const int32_t *CLO = b[1].view.buf, *CHI = b[2].view.buf, *ET = b[3].view.buf, *PT = b[5].view.buf;
    for (Py_ssize_t i = 0; i < ne; i++)
        if (CLO[i] < 0 || CHI[i] > nc || CLO[i] >= CHI[i] || ET[i] < 0 || ET[i] >= n) {
            PyErr_Format(PyExc_ValueError, "NFA byte edge %zd is out of range", i);
            goto done;
        }
    for (Py_ssize_t i = 0; i < np_; i++)
        if (PT[i] < 0) {
            PyErr_Format(PyExc_ValueError, "NFA epsilon edge %zd is out of range", i);
            goto done;
        }
    t = calloc(1, sizeof(NfaTab));
    if (t == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    t->n = (int32_t)n;
    t->nc = (int32_t)nc;
    t->max_bytes = max_bytes;
    const size_t m = (size_t)(n ? n : 1);
    if ((t->e_ptr = copy_ints(&b[0], n + 1)) == NULL || (t->e_clo = copy_ints(&b[1], ne)) == NULL ||
        (t->e_chi = copy_ints(&b[2], ne)) == NULL || (t->e_t = copy_ints(&b[3], ne)) == NULL ||
        (t->p_ptr = copy_ints(&b[4], n + 1)) == NULL || (t->p_t = copy_ints(&b[5], np_)) == NULL ||
        (t->h = copy_ints(&b[7], n)) == NULL)
        goto fail;
    t->special = malloc(m);
    t->reach_at = malloc(sizeof(int32_t) * m);
    t->reach_len = malloc(sizeof(int32_t) * m);
    t->row_at = malloc(sizeof(int32_t) * m);
    t->stamp = calloc(m, sizeof(int32_t));
    if (t->special == NULL || t->reach_at == NULL || t->reach_len == NULL || t->row_at == NULL || t->stamp == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    const int32_t *SP = b[6].view.buf;
    for (Py_ssize_t q = 0; q < n; q++) {
        t->special[q] = SP[q] != 0;
        t->reach_at[q] = -1;
        t->row_at[q] = -1;
    }
    cap = PyCapsule_New(t, NFA_CAPSULE, nfatab_capsule_free);
    if (cap == NULL) goto fail;
    goto done;
fail:
    nfatab_free(t);
done:
    for (int k = 0; k < 8; k++) buf_release(&b[k]);
    return cap;
}

PyDoc_STRVAR(nfa_tables_bytes_doc,
"nfa_tables_bytes(tables) -> (int, int, int)\n\n"
"Bytes the tables hold now: the copy of the NFA (fixed), and the steps derived from it (grow with\n"
"use, dropped by nfa_tables_clear); and the estimated bytes of the DFA states and plain-memo entries\n"
"plain_row interned itself since the last nfa_tables_clear (held by the automaton, not the tables).");

static PyObject *nfa_tables_bytes(PyObject *self, PyObject *cap) {
    (void)self;
    NfaTab *t = PyCapsule_GetPointer(cap, NFA_CAPSULE);
    if (t == NULL) return NULL;
    return Py_BuildValue("nnL", nfatab_fixed_bytes(t), nfatab_derived_bytes(t), t->interned);
}

PyDoc_STRVAR(nfa_tables_clear_doc,
"nfa_tables_clear(tables) -> None\n\n"
"Drop the steps derived so far (their memory is freed), keeping the copy of the NFA.");

static PyObject *nfa_tables_clear(PyObject *self, PyObject *cap) {
    (void)self;
    NfaTab *t = PyCapsule_GetPointer(cap, NFA_CAPSULE);
    if (t == NULL) return NULL;
    nfatab_clear(t);
    Py_RETURN_NONE;
}

/* Read ``obj`` as an int in [lo, hi] into ``*out``; ValueError naming the NFA state otherwise. */
static int nfa_int(PyObject *obj, long lo, long hi, Py_ssize_t q, const char *what, int32_t *out) {
    long v = PyLong_Check(obj) ? PyLong_AsLong(obj) : -1;
    if (v == -1 && PyErr_Occurred()) PyErr_Clear();
    else if (PyLong_Check(obj) && v >= lo && v <= hi) {
        *out = (int32_t)v;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "NFA state %zd: %s must be an int in [%ld, %ld]", q, what, lo, hi);
    return -1;
}

PyDoc_STRVAR(flatten_nfa_doc,
"flatten_nfa(edges, eps, n) -> (e_ptr, e_lo, e_hi, e_t, p_ptr, p_t)\n\n"
"The first ``n`` states of an NFA's edge lists (``edges[q]``: a list or tuple of (lo, hi, target) byte-range\n"
"tuples; ``eps[q]``: a list or tuple of target states) as bytes of native int32: CSR pointers (n + 1 each),\n"
"each byte edge's first byte, last byte and target, and each epsilon edge's target.  Raises\n"
"ValueError naming the state whose lists are malformed.");

static PyObject *flatten_nfa(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *edges, *eps;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyList_Type, &edges, &PyList_Type, &eps, &n)) return NULL;
    if (n < 0 || n > INT32_MAX - 1 || PyList_GET_SIZE(edges) < n || PyList_GET_SIZE(eps) < n) {
        PyErr_Format(PyExc_ValueError, "n=%zd must be at most the length of edges and eps", n);
        return NULL;
    }
    /* first pass: the sizes (nothing here runs Python code, so the lists cannot change under us) */
    Py_ssize_t ne = 0, np_ = 0;
    for (Py_ssize_t q = 0; q < n; q++) {
        PyObject *es = PyList_GET_ITEM(edges, q), *ps = PyList_GET_ITEM(eps, q);
        if (!(PyList_Check(es) || PyTuple_Check(es)) || !(PyList_Check(ps) || PyTuple_Check(ps))) {
            PyErr_Format(PyExc_ValueError, "NFA state %zd: its edges and epsilon edges must be lists or tuples", q);
            return NULL;
        }
        ne += PySequence_Fast_GET_SIZE(es);
        np_ += PySequence_Fast_GET_SIZE(ps);
    }
    if (ne > INT32_MAX || np_ > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "NFA has more than 2**31 - 1 edges");
        return NULL;
    }
    PyObject *out[6] = {PyBytes_FromStringAndSize(NULL, 4 * (n + 1)), PyBytes_FromStringAndSize(NULL, 4 * ne),
                        PyBytes_FromStringAndSize(NULL, 4 * ne), PyBytes_FromStringAndSize(NULL, 4 * ne),
                        PyBytes_FromStringAndSize(NULL, 4 * (n + 1)), PyBytes_FromStringAndSize(NULL, 4 * np_)};
    PyObject *result = NULL;
    for (int k = 0; k < 6; k++)
        if (out[k] == NULL) goto done;
    int32_t *EP = (int32_t *)PyBytes_AS_STRING(out[0]), *LO = (int32_t *)PyBytes_AS_STRING(out[1]),
            *HI = (int32_t *)PyBytes_AS_STRING(out[2]), *ET = (int32_t *)PyBytes_AS_STRING(out[3]),
            *PP = (int32_t *)PyBytes_AS_STRING(out[4]), *PT = (int32_t *)PyBytes_AS_STRING(out[5]);
    Py_ssize_t ie = 0, ip = 0;
    EP[0] = PP[0] = 0;
    for (Py_ssize_t q = 0; q < n; q++) {
        PyObject *es = PyList_GET_ITEM(edges, q), *ps = PyList_GET_ITEM(eps, q);
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(es); i++, ie++) {
            PyObject *e = PySequence_Fast_GET_ITEM(es, i);
            if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 3) {
                PyErr_Format(PyExc_ValueError, "NFA state %zd: byte edge %zd must be a (lo, hi, target) tuple", q, i);
                goto done;
            }
            if (nfa_int(PyTuple_GET_ITEM(e, 0), 0, 255, q, "a byte edge's first byte", &LO[ie]) < 0 ||
                nfa_int(PyTuple_GET_ITEM(e, 1), LO[ie], 255, q, "a byte edge's last byte", &HI[ie]) < 0 ||
                nfa_int(PyTuple_GET_ITEM(e, 2), 0, INT32_MAX, q, "a byte edge's target", &ET[ie]) < 0)
                goto done;
        }
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(ps); i++, ip++)
            if (nfa_int(PySequence_Fast_GET_ITEM(ps, i), 0, INT32_MAX, q, "an epsilon edge's target", &PT[ip]) < 0) goto done;
        EP[q + 1] = (int32_t)ie;
        PP[q + 1] = (int32_t)ip;
    }
    result = PyTuple_New(6);
    if (result == NULL) goto done;
    for (int k = 0; k < 6; k++) {
        PyTuple_SET_ITEM(result, k, out[k]);
        out[k] = NULL;
    }
done:
    for (int k = 0; k < 6; k++) Py_XDECREF(out[k]);
    return result;
}

/* Fill ``x``'s epsilon reach: the states with byte edges it reaches, or length -1 when a call, loop
 * head or machine end (or a state made after the copy) is among the states it reaches. */
static int nfatab_reach(NfaTab *t, int32_t x) {
    if (t->reach_at[x] >= 0) return 0;
    if (++t->stamp_now == INT32_MAX) {
        memset(t->stamp, 0, sizeof(int32_t) * (size_t)t->n);
        t->stamp_now = 1;
    }
    const int32_t now = t->stamp_now;
    const Py_ssize_t at = t->reach.n;
    int special = 0;
    t->todo.n = 0;
    t->stamp[x] = now;
    if (vec_push(&t->todo, x) < 0) return -1;
    while (t->todo.n && !special) {
        const int32_t y = t->todo.v[--t->todo.n];
        if (t->special[y]) {
            special = 1;
            break;
        }
        if (t->e_ptr[y + 1] > t->e_ptr[y] && vec_push(&t->reach, y) < 0) return -1;
        for (int32_t i = t->p_ptr[y]; i < t->p_ptr[y + 1]; i++) {
            const int32_t z = t->p_t[i];
            if (z >= t->n) { /* a state made after the copy (a lazy loop head) */
                special = 1;
                break;
            }
            if (t->stamp[z] != now) {
                t->stamp[z] = now;
                if (vec_push(&t->todo, z) < 0) return -1;
            }
        }
    }
    if (at > INT32_MAX || t->reach.n > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "NFA reach tables too large");
        return -1;
    }
    if (special) {
        t->reach.n = at;
        t->reach_at[x] = 0;
        t->reach_len[x] = -1;
    } else {
        t->reach_at[x] = (int32_t)at;
        t->reach_len[x] = (int32_t)(t->reach.n - at);
    }
    return 0;
}

/* Tabulate state ``q``'s steps: 1 when done, 0 when the tables are full, -1 on error. */
static int nfatab_row(NfaTab *t, int32_t q) {
    if (t->row_at[q] >= 0) return 1;
    if (nfatab_derived_bytes(t) >= t->max_bytes) return 0;
    for (int32_t i = t->e_ptr[q]; i < t->e_ptr[q + 1]; i++)
        if (nfatab_reach(t, t->e_t[i]) < 0) return -1;
    const Py_ssize_t row = t->cells.n + CUT_WORDS;
    if (row > INT32_MAX - 2 * (Py_ssize_t)t->nc || t->succ.n > INT32_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "NFA step tables too large");
        return -1;
    }
    if (vec_reserve(&t->cells, CUT_WORDS + 2 * (Py_ssize_t)t->nc) < 0) return -1;
    t->cells.n += CUT_WORDS; /* the bits: filled below, once the cells are */
    /* classes between two edge boundaries are covered by the same edges: one cell per such segment */
    uint8_t cut[257];
    memset(cut, 0, sizeof(cut));
    cut[0] = 1;
    for (int32_t i = t->e_ptr[q]; i < t->e_ptr[q + 1]; i++) cut[t->e_clo[i]] = cut[t->e_chi[i]] = 1;
    for (int32_t c = 0; c < t->nc;) {
        int32_t end = c + 1;
        while (end < t->nc && !cut[end]) end++;
        const int32_t lo = (int32_t)t->succ.n;
        int plain = 1;
        for (int32_t i = t->e_ptr[q]; i < t->e_ptr[q + 1] && plain; i++) {
            if (c < t->e_clo[i] || c >= t->e_chi[i]) continue;
            const int32_t x = t->e_t[i];
            if (t->reach_len[x] < 0) {
                plain = 0;
                break;
            }
            for (int32_t k = 0; k < t->reach_len[x]; k++) {
                const int32_t e = t->reach.v[t->reach_at[x] + k];
                /* the automaton's closure of (x, node) is empty when x cannot finish in the room */
                const int32_t need = t->h[x] > t->h[e] ? t->h[x] : t->h[e];
                Py_ssize_t j = lo;
                while (j < t->succ.n && t->succ.v[j] != e) j++;
                if (j < t->succ.n) {
                    if (need < t->need.v[j]) t->need.v[j] = need;
                } else if (vec_push(&t->succ, e) < 0 || vec_push(&t->need, need) < 0) {
                    return -1;
                }
            }
        }
        if (!plain) t->succ.n = t->need.n = lo;
        /* a step that is not plain is named by its segment's first class: classes stepping alike
         * are then told apart from the others without their targets */
        for (int32_t c2 = c; c2 < end; c2++) {
            t->cells.v[t->cells.n++] = plain ? lo : -2;
            t->cells.v[t->cells.n++] = plain ? (int32_t)t->succ.n : c;
        }
        c = end;
    }
    /* plain_row joins the configurations' cuts for every row it builds: worked out once here */
    uint32_t *bits = (uint32_t *)t->cells.v + row - CUT_WORDS;
    const int32_t *cells = t->cells.v + row;
    memset(bits, 0, sizeof(uint32_t) * CUT_WORDS);
    for (int32_t c = 1; c < t->nc; c++)
        if (cells[2 * c] != cells[2 * c - 2] || cells[2 * c + 1] != cells[2 * c - 1]) bits[c >> 5] |= 1u << (c & 31);
    t->row_at[q] = (int32_t)row;
    t->rows++;
    return 1;
}

/* Append the pair (e, uid) to ``sets`` (sort_pairs orders and dedupes them). */
static int append_pair(IntVec *sets, int32_t e, int32_t uid) {
    if (vec_reserve(sets, 2) < 0) return -1;
    sets->v[sets->n++] = e;
    sets->v[sets->n++] = uid;
    return 0;
}

static int pair_cmp(const void *a, const void *b) {
    const int32_t *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* Sort the pairs sets[at:] by (e, uid) and drop repeats: a set's key, whatever order it was met in. */
static void sort_pairs(IntVec *sets, Py_ssize_t at) {
    const Py_ssize_t n = (sets->n - at) / 2;
    if (n < 2) return;
    int32_t *v = sets->v + at;
    if (n > 16) {
        qsort(v, (size_t)n, 2 * sizeof(int32_t), pair_cmp);
    } else { /* most sets are a few pairs: an insertion sort beats qsort's calls */
        for (Py_ssize_t r = 1; r < n; r++) {
            const int32_t e = v[2 * r], u = v[2 * r + 1];
            Py_ssize_t x = r;
            for (; x > 0 && (v[2 * x - 2] > e || (v[2 * x - 2] == e && v[2 * x - 1] > u)); x--) {
                v[2 * x] = v[2 * x - 2];
                v[2 * x + 1] = v[2 * x - 1];
            }
            v[2 * x] = e;
            v[2 * x + 1] = u;
        }
    }
    Py_ssize_t w = 1;
    for (Py_ssize_t r = 1; r < n; r++)
        if (v[2 * r] != v[2 * w - 2] || v[2 * r + 1] != v[2 * w - 1]) {
            v[2 * w] = v[2 * r];
            v[2 * w + 1] = v[2 * r + 1];
            w++;
        }
    sets->n = at + 2 * w;
}

/* The configuration tuple (q, node) of the pair (q, uid): ``made[q << 32 | uid]``, else a new tuple
 * remembered there (``nodes[i]`` is the node whose id is ``uids[i]``); NULL on error.  Sets share
 * their tuples, as the automaton's closures do: a fresh tuple per pair and set made the garbage
 * collector run over the whole heap far more often than the rows themselves cost. */
static PyObject *config_of(int32_t q, int32_t uid, PyObject *made, PyObject *const *nodes, const int32_t *uids,
                           Py_ssize_t k) {
    PyObject *key = PyLong_FromLongLong(((long long)q << 32) | (long long)uid), *pair = NULL;
    if (key == NULL) return NULL;
    pair = PyDict_GetItemWithError(made, key); /* borrowed */
    if (pair != NULL) {
        Py_INCREF(pair);
    } else if (!PyErr_Occurred()) {
        Py_ssize_t i = 0;
        while (i < k && uids[i] != uid) i++;
        PyObject *qo = i < k ? PyLong_FromLong(q) : NULL;
        if (i == k) PyErr_SetString(PyExc_ValueError, "a plain step names an unknown node");
        pair = qo != NULL ? PyTuple_Pack(2, qo, nodes[i]) : NULL;
        Py_XDECREF(qo);
        if (pair != NULL && PyDict_SetItem(made, key, pair) < 0) Py_CLEAR(pair);
    }
    Py_DECREF(key);
    return pair;
}

/* The pairs ``v[0:len]`` as a list of (NFA state, node) tuples (config_of); NULL on error. */
static PyObject *pairs_list(const int32_t *v, Py_ssize_t len, PyObject *made, PyObject *const *nodes,
                            const int32_t *uids, Py_ssize_t k) {
    PyObject *pairs = PyList_New(len / 2);
    for (Py_ssize_t p = 0; pairs != NULL && p < len / 2; p++) {
        PyObject *pair = config_of(v[2 * p], v[2 * p + 1], made, nodes, uids, k);
        if (pair == NULL) {
            Py_CLEAR(pairs);
            break;
        }
        PyList_SET_ITEM(pairs, p, pair);
    }
    return pairs;
}

/* ``obj``: None (0), or Automaton.interner()'s tuple, read into ``in`` (1); -1 on error. */
static int interner_open(Interner *in, PyObject *obj) {
    if (obj == Py_None) return 0;
    if (!PyTuple_Check(obj) ||
        !PyArg_ParseTuple(obj, "O!O!OLLL;interner must be Automaton.interner()'s tuple", &PyList_Type, &in->states,
                          &PyDict_Type, &in->index, &in->state_type, &in->state_b, &in->config_b, &in->memo_b)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "interner must be None or Automaton.interner()'s tuple");
        return -1;
    }
    if (!PyType_Check(in->state_type)) {
        PyErr_SetString(PyExc_TypeError, "interner: the state type must be a class");
        return -1;
    }
    return 1;
}

/* Rows of ``automaton.table`` now (the callbacks may have grown it); -1 on error. */
static Py_ssize_t table_rows(PyObject *automaton) {
    PyObject *obj = PyObject_GetAttr(automaton, S_table);
    if (obj == NULL) return -1;
    Py_buffer b;
    if (PyObject_GetBuffer(obj, &b, PyBUF_ND) < 0) {
        Py_DECREF(obj);
        return -1;
    }
    const Py_ssize_t rows = b.ndim == 2 ? b.shape[0] : -1;
    PyBuffer_Release(&b);
    Py_DECREF(obj);
    if (rows < 0) PyErr_SetString(PyExc_ValueError, "automaton.table must be 2-dimensional");
    return rows;
}

/* A new ``state_type`` holding ``configs``, not accepting: made by the type's ``tp_new`` with its two
 * attributes set, as DfaState.__init__ sets them, without a Python frame for __init__ (which made
 * up most of the cost of a state).  NULL on error. */
static PyObject *new_state(PyObject *state_type, PyObject *configs) {
    PyTypeObject *type = (PyTypeObject *)state_type;
    if (type->tp_new == NULL) {
        PyErr_Format(PyExc_TypeError, "cannot create '%.100s' states", type->tp_name);
        return NULL;
    }
    PyObject *none = PyTuple_New(0);
    if (none == NULL) return NULL;
    PyObject *state = type->tp_new(type, none, NULL);
    Py_DECREF(none);
    if (state != NULL &&
        (PyObject_SetAttr(state, S_configs, configs) < 0 || PyObject_SetAttr(state, S_accepting, Py_False) < 0))
        Py_CLEAR(state);
    return state;
}

/* The DFA state of the plain set ``v[0:len]`` (no NFA state twice) made here, as Automaton._intern_plain
 * would: the state the index holds for (configurations, not accepting), else a new DfaState appended
 * to the states; then ``memo[key]``.  A new reference to the id; NULL with ``*later`` set when the new
 * state would pass the table's rows (the callback grows the table), NULL with an error otherwise. */
static PyObject *intern_here(const Interner *in, NfaTab *t, PyObject *automaton, PyObject *key, const int32_t *v,
                             Py_ssize_t len, PyObject *memo, PyObject *made, PyObject *const *nodes,
                             const int32_t *uids, Py_ssize_t k, int *later) {
    PyObject *pairs = pairs_list(v, len, made, nodes, uids, k), *ikey = NULL, *sid = NULL, *state = NULL;
    if (pairs == NULL) return NULL;
    PyObject *configs = PyFrozenSet_New(pairs);
    Py_DECREF(pairs);
    if (configs == NULL) return NULL;
    ikey = PyTuple_Pack(2, configs, Py_False);
    if (ikey == NULL) goto done;
    sid = PyDict_GetItemWithError(in->index, ikey); /* borrowed */
    if (sid != NULL) {
        Py_INCREF(sid);
    } else if (!PyErr_Occurred()) {
        const Py_ssize_t n = PyList_GET_SIZE(in->states), rows = table_rows(automaton);
        if (rows < 0) goto done;
        if (n >= rows) {
            *later = 1;
            goto done;
        }
        state = new_state(in->state_type, configs);
        if (state == NULL || (sid = PyLong_FromSsize_t(n)) == NULL) goto done;
        /* the state first, as _intern: an id in the index always names a listed state */
        if (PyList_Append(in->states, state) < 0 || PyDict_SetItem(in->index, ikey, sid) < 0) {
            Py_CLEAR(sid);
            goto done;
        }
        t->interned += in->state_b + in->config_b * (long long)(len / 2);
    }
    if (sid != NULL) {
        if (PyDict_SetItem(memo, key, sid) < 0)
            Py_CLEAR(sid);
        else
            t->interned += in->memo_b + (long long)PyBytes_GET_SIZE(key);
    }
done:
    Py_XDECREF(state);
    Py_XDECREF(ikey);
    Py_DECREF(configs);
    return sid;
}

/* The DFA state of the pairs ``v[0:len]``: ``memo[key]``, else (a plain set without repeats, with an
 * interner ``in``) interned here, else ``make(key, pairs, repeats)`` with the pairs as a list of (NFA
 * state, node) tuples (from config_of) and whether an NFA state occurs twice; -3 on error. */
static int32_t resolve(const int32_t *v, Py_ssize_t len, PyObject *memo, PyObject *make, PyObject *made,
                       PyObject *const *nodes, const int32_t *uids, Py_ssize_t k, const Interner *in, NfaTab *t,
                       PyObject *automaton) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)v, 4 * len);
    if (key == NULL) return -3;
    PyObject *got = PyDict_GetItemWithError(memo, key); /* borrowed */
    if (got != NULL) {
        Py_INCREF(got);
    } else if (!PyErr_Occurred()) {
        int repeats = 0, later = 0;
        for (Py_ssize_t p = 1; p < len / 2; p++)
            if (v[2 * p] == v[2 * p - 2]) repeats = 1;
        if (in != NULL && !repeats) got = intern_here(in, t, automaton, key, v, len, memo, made, nodes, uids, k, &later);
        if (got == NULL && (in == NULL || repeats || later)) {
            PyObject *pairs = pairs_list(v, len, made, nodes, uids, k);
            if (pairs != NULL) {
                got = PyObject_CallFunctionObjArgs(make, key, pairs, repeats ? Py_True : Py_False, NULL);
                Py_DECREF(pairs);
            }
        }
    }
    Py_DECREF(key);
    return int32_result(got, DEAD, "a plain step (a DFA state)");
}

PyDoc_STRVAR(plain_row_doc,
"plain_row(tables, automaton, sid, configs, max_depth, plain_memo, escape_memo, made, intern, escape,\n"
"          interner=None) -> bool\n\n"
"Write the row of DFA state ``sid`` (its ``configs``: a frozenset of (NFA state, stack node) pairs) into\n"
"``automaton.table``.  Each distinct set of configurations that a class's plain steps reach is\n"
"keyed by the bytes of its sorted int32 (NFA state, node id) pairs and looked up in ``plain_memo``,\n"
"else made by ``intern(key, pairs, repeats)`` (``pairs``: a list of (NFA state, node) tuples, taken\n"
"from or added to the dict ``made`` under ``state << 32 | node id``; ``repeats``: whether an NFA\n"
"state occurs twice); a group of classes whose step is not plain (a call, loop head or machine end)\n"
"is keyed by its byte targets in the same form, in ``escape_memo`` else by ``escape(key, pairs,\n"
"repeats)``.  With ``interner`` (Automaton.interner()'s tuple) a new plain set without repeats is\n"
"interned here as intern would (the index, then a new DfaState appended to the states; its estimated\n"
"bytes added to the tables' interned bytes), unless its id would pass automaton.table's rows.\n"
"Returns False, writing nothing, when the tables are full or a node id passes int32.");

/* Scratch of ``bytes`` bytes: the tables' own block ``*p`` (grown as needed), or, while another row
 * is under way (``busy``: this call comes from inside its callbacks, which still use that block),
 * a fresh one left in ``*own`` for the caller to free; NULL with MemoryError. */
static void *scratch_take(void **p, size_t *cap, size_t bytes, int busy, void **own) {
    if (busy) {
        *own = malloc(bytes);
        if (*own == NULL) PyErr_NoMemory();
        return *own;
    }
    if (bytes > *cap) {
        const size_t want = bytes + bytes / 2;
        void *q = malloc(want); /* not realloc: the old contents are not needed */
        if (q == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        free(*p);
        *p = q;
        *cap = want;
    }
    return *p;
}

/* max_depth as a room: any int >= 0 (SchemaOptions bounds it, but a room past INT32_MAX admits every
 * completion depth alike, see plain_row_core), LLONG_MAX past long long; -1 with ValueError. */
static int read_max_depth(PyObject *obj, long long *out) {
    int overflow = 0;
    long long v = PyLong_Check(obj) ? PyLong_AsLongLongAndOverflow(obj, &overflow) : -1;
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow > 0) v = LLONG_MAX;
    if (overflow < 0 || v < 0) {
        PyErr_SetString(PyExc_ValueError, "max_depth must be an int >= 0");
        return -1;
    }
    *out = v;
    return 0;
}

/* plain_row's work (see its doc): 1 when the row is written, 0 when it is left to the automaton
 * (nothing written), -1 on error.  ``configs`` is an exact frozenset the caller holds: its pairs,
 * and so the nodes borrowed below, live as long as the call. */
static int plain_row_core(NfaTab *t, PyObject *automaton, int sid, PyObject *configs, long long max_depth,
                          PyObject *plain_memo, PyObject *escape_memo, PyObject *made, PyObject *intern,
                          PyObject *escape, const Interner *interner) {
    int result = -1;
    PyObject *it = NULL, *item = NULL, *table_obj = NULL;
    Py_buffer table;
    int table_held = 0;
    void *own1 = NULL, *own2 = NULL;
    const int was_busy = t->busy;
    const Py_ssize_t k = PySet_GET_SIZE(configs);
    const int32_t nc = t->nc;
    const size_t kk = (size_t)(k ? k : 1);
    /* per configuration: its node (borrowed from ``configs``), node id and (state, room, node id);
     * per group: the hash of its cells, its first class and its index; per class: its group's index */
    char *s1 = scratch_take(&t->scratch, &t->scratch_cap,
                            (sizeof(PyObject *) + 4 * sizeof(int32_t)) * kk +
                                (sizeof(uint64_t) + 3 * sizeof(int32_t)) * (size_t)nc,
                            was_busy, &own1);
    if (s1 == NULL) return -1;
    t->busy = 1;
    PyObject **nodes = (PyObject **)s1;
    uint64_t *gh = (uint64_t *)(s1 + sizeof(PyObject *) * kk);
    int32_t *uids = (int32_t *)(gh + nc), *in = uids + kk, *grp = in + 3 * kk, *A = grp + 2 * (size_t)nc;
    it = PyObject_GetIter(configs);
    if (it == NULL) goto done;
    Py_ssize_t n_in = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || n_in >= k) {
            PyErr_SetString(PyExc_ValueError, "configs must be (NFA state, stack node) pairs");
            goto done;
        }
        PyObject *node = PyTuple_GET_ITEM(item, 1);
        const long q = PyLong_AsLong(PyTuple_GET_ITEM(item, 0)), uid = PyLong_AsLong(node);
        if ((q == -1 || uid == -1) && PyErr_Occurred()) goto done;
        PyObject *d = PyObject_GetAttr(node, S_depth);
        if (d == NULL) goto done;
        const long depth = PyLong_AsLong(d);
        Py_DECREF(d);
        if (depth == -1 && PyErr_Occurred()) goto done;
        if (uid < 0 || depth < 0 || (long long)depth > max_depth) {
            PyErr_Format(PyExc_ValueError, "stack node %ld (depth %ld) is out of range", uid, depth);
            goto done;
        }
        /* not in the copied NFA, or a node id past int32 (ids grow across evictions for the
         * automaton's life): the automaton builds this row */
        if (q < 0 || q >= t->n || uid > INT32_MAX) {
            result = 0;
            goto done;
        }
        in[3 * n_in] = (int32_t)q;
        /* completion depths are at most INT32_MAX, so a larger room admits them all alike */
        in[3 * n_in + 1] = max_depth - depth > INT32_MAX ? INT32_MAX : (int32_t)(max_depth - (long long)depth);
        in[3 * n_in + 2] = uids[n_in] = (int32_t)uid;
        nodes[n_in] = node;
        n_in++;
        Py_CLEAR(item);
    }
    if (PyErr_Occurred()) goto done;
    for (Py_ssize_t i = 0; i < n_in; i++) {
        const int ok = nfatab_row(t, in[3 * i]);
        if (ok < 0) goto done;
        if (!ok) {
            result = 0;
            goto done;
        }
    }
    /* classes between two boundaries of any configuration's cells step alike: one segment */
    uint32_t cut[CUT_WORDS] = {0};
    for (Py_ssize_t i = 0; i < n_in; i++) {
        const uint32_t *bits = (const uint32_t *)t->cells.v + t->row_at[in[3 * i]] - CUT_WORDS;
        for (int w = 0; w < CUT_WORDS; w++) cut[w] |= bits[w];
    }
    Py_ssize_t n_grp = 0;
    t->sets.n = 0;
    t->set_at.n = 0; /* per distinct set: its kind (0 plain, 1 escape), offset in ``sets``, length */
    for (int32_t c = 0; c < nc; c++) {
        if (c > 0 && !(cut[c >> 5] >> (c & 31) & 1)) {
            A[c] = A[c - 1];
            continue;
        }
        /* segments whose cells agree for every configuration step alike: one group (a hash of the
         * segment's cells over the configurations skips most comparisons of wide rows) */
        uint64_t hash = 1469598103934665603ULL;
        for (Py_ssize_t i = 0; i < n_in; i++) {
            const int32_t *cells = t->cells.v + t->row_at[in[3 * i]];
            hash = (hash ^ (uint32_t)cells[2 * c]) * 1099511628211ULL;
            hash = (hash ^ (uint32_t)cells[2 * c + 1]) * 1099511628211ULL;
        }
        Py_ssize_t g = 0;
        for (; g < n_grp; g++) {
            if (gh[g] != hash) continue;
            const int32_t c2 = grp[2 * g];
            Py_ssize_t i = 0;
            for (; i < n_in; i++) {
                const int32_t *cells = t->cells.v + t->row_at[in[3 * i]];
                if (cells[2 * c] != cells[2 * c2] || cells[2 * c + 1] != cells[2 * c2 + 1]) break;
            }
            if (i == n_in) break;
        }
        if (g < n_grp) {
            A[c] = grp[2 * g + 1];
            continue;
        }
        const Py_ssize_t at = t->sets.n;
        int plain = 1;
        for (Py_ssize_t i = 0; i < n_in && plain; i++) {
            const int32_t *cell = t->cells.v + t->row_at[in[3 * i]] + 2 * (Py_ssize_t)c;
            if (cell[0] == -2) {
                plain = 0;
                break;
            }
            for (int32_t j = cell[0]; j < cell[1]; j++)
                if (t->need.v[j] <= in[3 * i + 1] && append_pair(&t->sets, t->succ.v[j], in[3 * i + 2]) < 0)
                    goto done;
        }
        if (!plain) { /* the byte targets instead: the key of the automaton's own step */
            t->sets.n = at;
            for (Py_ssize_t i = 0; i < n_in; i++) {
                const int32_t q = in[3 * i];
                for (int32_t j = t->e_ptr[q]; j < t->e_ptr[q + 1]; j++)
                    if (c >= t->e_clo[j] && c < t->e_chi[j] && append_pair(&t->sets, t->e_t[j], in[3 * i + 2]) < 0)
                        goto done;
            }
        }
        sort_pairs(&t->sets, at);
        const Py_ssize_t len = t->sets.n - at;
        int32_t index = -1; /* dead */
        if (len > 0) {
            const Py_ssize_t ns = t->set_at.n / 3;
            Py_ssize_t b = 0;
            for (; b < ns; b++) {
                const int32_t *rec = t->set_at.v + 3 * b;
                if (rec[0] == !plain && rec[2] == len &&
                    memcmp(t->sets.v + rec[1], t->sets.v + at, sizeof(int32_t) * (size_t)len) == 0)
                    break;
            }
            if (b < ns) {
                t->sets.n = at; /* a set seen before: drop the copy */
            } else if (vec_push(&t->set_at, !plain) < 0 || vec_push(&t->set_at, (int32_t)at) < 0 ||
                       vec_push(&t->set_at, (int32_t)len) < 0) {
                goto done;
            }
            index = (int32_t)b;
        }
        grp[2 * n_grp] = c;
        grp[2 * n_grp + 1] = index;
        gh[n_grp] = hash;
        n_grp++;
        A[c] = index;
    }
    const Py_ssize_t ns = t->set_at.n / 3;
    /* the callbacks run Python (an escape computes closures): work on a copy of the sets, which
     * another row's call would overwrite */
    int32_t *ids = scratch_take(&t->scratch2, &t->scratch2_cap,
                                sizeof(int32_t) * ((size_t)ns + (size_t)t->sets.n + 3 * (size_t)ns + 1), was_busy,
                                &own2);
    if (ids == NULL) goto done;
    int32_t *saved = ids + ns;
    if (t->sets.n) memcpy(saved, t->sets.v, sizeof(int32_t) * (size_t)t->sets.n); /* v is NULL while empty */
    if (ns) memcpy(saved + t->sets.n, t->set_at.v, sizeof(int32_t) * (size_t)(3 * ns));
    const int32_t *recs = saved + t->sets.n;
    for (Py_ssize_t b = 0; b < ns; b++) {
        const int32_t kind = recs[3 * b], at = recs[3 * b + 1], len = recs[3 * b + 2];
        ids[b] = resolve(saved + at, len, kind ? escape_memo : plain_memo, kind ? escape : intern, made, nodes, uids,
                         n_in, kind ? NULL : interner, t, automaton);
        if (ids[b] == -3) goto done;
    }
    table_obj = PyObject_GetAttr(automaton, S_table); /* after the callbacks: they may grow it */
    if (table_obj == NULL) goto done;
    if (PyObject_GetBuffer(table_obj, &table, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND | PyBUF_WRITABLE) < 0)
        goto done;
    table_held = 1;
    if (table.itemsize != 4 || !int_format(table.format) || table.ndim != 2 || table.shape[1] != nc || sid < 0 ||
        sid >= table.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "automaton.table must be an int32 array (states, classes) holding the state");
        goto done;
    }
    for (Py_ssize_t b = 0; b < ns; b++)
        if (ids[b] >= table.shape[0]) {
            PyErr_Format(PyExc_ValueError, "a plain step gave DFA state %ld, past automaton.table's %zd rows",
                         (long)ids[b], table.shape[0]);
            goto done;
        }
    int32_t *row = (int32_t *)table.buf + (Py_ssize_t)sid * nc;
    for (int32_t c = 0; c < nc; c++) row[c] = A[c] < 0 ? DEAD : ids[A[c]];
    result = 1;
done:
    t->busy = was_busy;
    Py_XDECREF(item);
    Py_XDECREF(it);
    if (table_held) PyBuffer_Release(&table);
    Py_XDECREF(table_obj);
    free(own1);
    free(own2);
    return result;
}

PyDoc_STRVAR(groups_walk_doc,
"groups_walk(automaton, step, n_classes, class_of_byte, flat, start, length, ids, chain, n_groups, g_run, g_cls,\n"
"            g_lo, g_hi, mixed_ids, mixed_lcp, mixed_ends, mixed_tails, cut_rows, cut_offset, words, check,\n"
"            max_walked, rows=None) -> int\n\n"
"The walked part of a run mask (engine/runs.py) in one pass: for each group g < ``n_groups`` the state\n"
"``chain[g_run[g]]`` reads a byte of class ``g_cls[g]``; where that leads to a live state, the group's rows\n"
"``g_lo[g]:g_hi[g]`` of the mixed layout (order_groups: token ids int32, shared prefixes uint8, tail ends\n"
"int32, tails) are read on in it, each sharing the steps of its first ``mixed_lcp[i]`` bytes with the row\n"
"before; the token rows ``cut_rows`` of ``flat``, ``start``, ``length``, ``ids`` are read on from byte\n"
"``cut_offset`` in ``chain[-1]``.  Each row read to its end sets the bit of its token id in ``words``\n"
"(uint32).  Returns how many did, or -1, setting nothing, when more than ``max_walked`` rows would be read.\n"
"Other arrays int64 except ``g_cls`` (int32); missing DFA rows come from ``step``, or as in trie_walk with\n"
"``rows`` (Automaton.row_context()'s tuple).");

/* A group as checked: its rows ``lo:hi`` of the mixed layout, read on in state ``next``. */
typedef struct {
    int64_t lo, hi;
    int32_t next;
} Group;

static PyObject *groups_walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *automaton, *step, *o_cls, *o_flat, *o_start, *o_len, *o_ids, *o_chain, *o_run, *o_gcls, *o_glo, *o_ghi;
    PyObject *o_mids, *o_lcp, *o_ends, *o_tails, *o_cut, *o_words, *check, *o_ctx = Py_None;
    Py_ssize_t n_classes, n_groups, cut_off, max_walked;
    if (!PyArg_ParseTuple(args, "OOnOOOOOOnOOOOOOOOOnOOn|O", &automaton, &step, &n_classes, &o_cls, &o_flat,
                          &o_start, &o_len, &o_ids, &o_chain, &n_groups, &o_run, &o_gcls, &o_glo, &o_ghi, &o_mids,
                          &o_lcp, &o_ends, &o_tails, &o_cut, &cut_off, &o_words, &check, &max_walked, &o_ctx))
        return NULL;
    RowCtx rc;
    const int with_rows = rowctx_open(&rc, o_ctx);
    if (with_rows < 0) return NULL;
    Buf cls, flat, st, ln, ids, chain, run, gcls, glo, ghi, mids, lcp, ends, tails, cut, words;
    Buf *all[] = {&cls, &flat, &st, &ln, &ids, &chain, &run, &gcls, &glo, &ghi, &mids, &lcp, &ends, &tails, &cut, &words};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) all[i]->held = 0;
    Dfa d;
    int dfa_ok = 0;
    Group *grp = NULL;
    IntVec path = {NULL, 0, 0};
    Py_ssize_t kept = -2;
    if (buf_get(&cls, o_cls, 4, 0, "class_of_byte") < 0 || buf_get(&flat, o_flat, 1, 0, "flat") < 0 ||
        buf_get(&st, o_start, 8, 0, "start") < 0 || buf_get(&ln, o_len, 8, 0, "length") < 0 ||
        buf_get(&ids, o_ids, 8, 0, "ids") < 0 || buf_get(&chain, o_chain, 8, 0, "chain") < 0 ||
        buf_get(&run, o_run, 8, 0, "g_run") < 0 || buf_get(&gcls, o_gcls, 4, 0, "g_cls") < 0 ||
        buf_get(&glo, o_glo, 8, 0, "g_lo") < 0 || buf_get(&ghi, o_ghi, 8, 0, "g_hi") < 0 ||
        buf_get(&mids, o_mids, 4, 0, "mixed_ids") < 0 || buf_get(&lcp, o_lcp, 1, 0, "mixed_lcp") < 0 ||
        buf_get(&ends, o_ends, 4, 0, "mixed_ends") < 0 || buf_get(&tails, o_tails, 1, 0, "mixed_tails") < 0 ||
        buf_get(&cut, o_cut, 8, 0, "cut_rows") < 0 || buf_get(&words, o_words, 4, 1, "words") < 0)
        goto done;
    const Py_ssize_t n_rows = buf_len(&st), n_chain = buf_len(&chain), n_mixed = buf_len(&mids);
    if (buf_len(&cls) != 256 || buf_len(&ln) != n_rows || buf_len(&ids) != n_rows || !words.held || n_chain < 1 ||
        n_groups < 0 || n_groups > buf_len(&run) || n_groups > buf_len(&gcls) || n_groups > buf_len(&glo) ||
        n_groups > buf_len(&ghi) || cut_off < 0 || buf_len(&lcp) != n_mixed || buf_len(&ends) != n_mixed) {
        PyErr_SetString(PyExc_ValueError, "groups_walk: arrays disagree in length (or the chain is empty)");
        goto done;
    }
    dfa_ok = 1; /* dfa_open leaves ``d`` closable even when it fails */
    if (dfa_open(&d, automaton, step, check, n_classes) < 0) goto done_dfa;
    if (with_rows) d.rows = &rc;
    /* The callbacks (step, check) run Python between the checks below and the reads they guard, and
     * the arrays are plain writable ones: what is checked once (the byte classes, each group's run and
     * row range) is copied first and read from the copy, so a callback that rewrites an array cannot
     * make the walk read past another.  The rest is checked where it is read (walk_group, walk_row). */
    int32_t C[256];
    if (load_classes(C, &cls, n_classes) < 0) goto done_dfa;
    const int32_t *G = gcls.view.buf;
    const int64_t *Q = chain.view.buf, *RU = run.view.buf, *LO = glo.view.buf, *HI = ghi.view.buf, *K = cut.view.buf;
    grp = malloc(sizeof(Group) * (size_t)(n_groups ? n_groups : 1));
    if (grp == NULL) {
        PyErr_NoMemory();
        goto done_dfa;
    }
    /* first where each group leaves the run, and how many rows that leaves to read */
    Py_ssize_t walked = buf_len(&cut);
    for (Py_ssize_t g = 0; g < n_groups; g++) {
        if (RU[g] < 0 || RU[g] >= n_chain) {
            bad_index("run length of group", RU[g]);
            goto done_dfa;
        }
        if (LO[g] < 0 || LO[g] > HI[g] || HI[g] > n_mixed) {
            bad_index("row range of group", g);
            goto done_dfa;
        }
        if (G[g] < 0 || G[g] >= n_classes) {
            bad_index("class of group", G[g]);
            goto done_dfa;
        }
        const int64_t q = Q[RU[g]];
        if (q < 0 || q > INT32_MAX) {
            bad_index("DFA state", q);
            goto done_dfa;
        }
        grp[g] = (Group){LO[g], HI[g], 0};
        grp[g].next = dfa_step(&d, (int32_t)q, G[g]);
        if (grp[g].next == -3) goto done_dfa;
        if (grp[g].next >= 0) walked += (Py_ssize_t)(grp[g].hi - grp[g].lo);
    }
    if (walked > max_walked) {
        kept = -1;
        goto done_dfa;
    }
    Rows tk = {C, flat.view.buf, st.view.buf, ln.view.buf, ids.view.buf, words.view.buf, n_rows, buf_len(&flat),
               buf_len(&words), 0};
    const Tails tl = {mids.view.buf, ends.view.buf, lcp.view.buf, tails.view.buf, buf_len(&tails)};
    Py_ssize_t n_kept = 0;
    for (Py_ssize_t g = 0; g < n_groups; g++) {
        if (grp[g].next < 0) continue;
        const Py_ssize_t ok = walk_group(&d, &tk, &tl, grp[g].lo, grp[g].hi, grp[g].next, &path, check);
        if (ok < 0) goto done_dfa;
        n_kept += ok;
    }
    /* the cut rows share nothing: few (none on the benchmarks), and read from an offset that varies by call */
    for (Py_ssize_t i = 0; i < buf_len(&cut); i++) {
        const int ok = walk_row(&d, &tk, K[i], cut_off, Q[n_chain - 1], check);
        if (ok < 0) goto done_dfa;
        n_kept += ok;
    }
    kept = n_kept;
done_dfa:
    if (dfa_ok) dfa_close(&d);
done:
    free(grp);
    vec_drop(&path);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) buf_release(all[i]);
    if (kept < -1) return NULL;
    return PyLong_FromSsize_t(kept);
}

PyDoc_STRVAR(run_chain_doc,
"run_chain(automaton, step, n_classes, classes, sid, max_run, check, rows=None) -> (list, bool)\n\n"
"The chain of a run (engine/runs.py): the states S_0 = ``sid``, S_1, ... that bytes of the set made of\n"
"the classes ``classes`` (bytes, one class each, ascending) lead through while all of them lead from S_i\n"
"to one and the same live state, at most ``max_run`` steps; and whether it stopped because they lead\n"
"to different states (cut: longer runs need a walk from the last state).  It also stops where they all\n"
"refuse.  Missing DFA rows come from ``step`` (Automaton.step_row), or as in trie_walk with ``rows``;\n"
"``check`` is called after each.  Hold ``automaton.lock``.");

static PyObject *run_chain(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *automaton, *step, *check, *o_ctx = Py_None;
    Py_ssize_t n_classes, sid, max_run, n_set;
    const char *set;
    if (!PyArg_ParseTuple(args, "OOny#nnO|O", &automaton, &step, &n_classes, &set, &n_set, &sid, &max_run, &check,
                          &o_ctx))
        return NULL;
    if (n_classes < 1 || n_classes > 256 || n_set < 1 || sid < 0 || sid > INT32_MAX || max_run < 0) {
        PyErr_SetString(PyExc_ValueError, "run_chain: needs 1..256 classes, a set of at least one, sid and "
                                          "max_run >= 0");
        return NULL;
    }
    int32_t cls[256];
    for (Py_ssize_t i = 0; i < n_set; i++) {
        const int32_t c = (uint8_t)set[i];
        if (i >= 256 || c >= n_classes || (i > 0 && c <= cls[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "run_chain: classes must be distinct, ascending and below n_classes");
            return NULL;
        }
        cls[i] = c;
    }
    RowCtx rc;
    const int with_rows = rowctx_open(&rc, o_ctx);
    if (with_rows < 0) return NULL;
    Dfa d;
    PyObject *chain = PyList_New(0), *result = NULL;
    if (chain == NULL) return NULL;
    if (dfa_open(&d, automaton, step, check, n_classes) < 0) goto done_dfa;
    if (with_rows) d.rows = &rc;
    int32_t state = (int32_t)sid;
    int cut = 0;
    for (;;) {
        PyObject *item = PyLong_FromLong(state);
        if (item == NULL || PyList_Append(chain, item) < 0) {
            Py_XDECREF(item);
            goto done_dfa;
        }
        Py_DECREF(item);
        if (PyList_GET_SIZE(chain) > max_run) break;
        const int32_t first = dfa_step(&d, state, cls[0]);
        if (first == -3) goto done_dfa;
        for (Py_ssize_t i = 1; i < n_set && !cut; i++) {
            const int32_t v = dfa_step(&d, state, cls[i]);
            if (v == -3) goto done_dfa;
            cut = v != first;
        }
        if (cut || first < 0) break;
        state = first;
    }
    result = Py_BuildValue("(OO)", chain, cut ? Py_True : Py_False);
done_dfa:
    dfa_close(&d);
    Py_DECREF(chain);
    return result;
}

PyDoc_STRVAR(pack_ids_doc,
"pack_ids(ids, words) -> None\n\n"
"Set the bit of every token id of ``ids`` (int64) in ``words`` (uint32, writable): bit ``id & 31`` of\n"
"word ``id >> 5``.  ValueError for an id outside the words (negative included), setting none.");

static PyObject *pack_ids(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_ids, *o_words;
    if (!PyArg_ParseTuple(args, "OO", &o_ids, &o_words)) return NULL;
    Buf ids, words;
    ids.held = words.held = 0;
    PyObject *result = NULL;
    if (buf_get(&ids, o_ids, 8, 0, "ids") < 0 || buf_get(&words, o_words, 4, 1, "words") < 0) goto done;
    if (!ids.held || !words.held) {
        PyErr_SetString(PyExc_TypeError, "pack_ids: ids and words must be arrays");
        goto done;
    }
    const int64_t *I = ids.view.buf;
    const Py_ssize_t n = buf_len(&ids), n_words = buf_len(&words);
    for (Py_ssize_t i = 0; i < n; i++) /* checked first: nothing set when one is out of range */
        if (I[i] < 0 || (I[i] >> 5) >= n_words) {
            PyErr_Format(PyExc_ValueError, "token id %lld is outside the bitmask (%zd words)", (long long)I[i],
                         n_words);
            goto done;
        }
    uint32_t *W = words.view.buf;
    for (Py_ssize_t i = 0; i < n; i++) W[I[i] >> 5] |= (uint32_t)1 << (I[i] & 31);
    result = Py_None;
    Py_INCREF(result);
done:
    buf_release(&ids);
    buf_release(&words);
    return result;
}

/* -- whole-NFA passes of a compile (Automaton.__init__): completion depth, weight-0 call cycles ------------ */

#define DEPTH_INF (1 << 30) /* automaton.INF: cannot finish */

/* An int32 array argument of at least ``n`` items (read-only); -1 with an error naming it. */
static int ints_arg(Buf *b, PyObject *o, Py_ssize_t n, const char *name) {
    if (buf_get(b, o, 4, 0, name) < 0) return -1;
    if (!b->held || buf_len(b) < n) {
        PyErr_Format(PyExc_ValueError, "%s must be an int32 array of at least %zd items", name, n);
        return -1;
    }
    return 0;
}

/* ``ptr`` (n + 1 CSR pointers into ``m`` targets) well formed, every target in [0, n); -1 with an error. */
static int csr_ok(const int32_t *ptr, Py_ssize_t n, const int32_t *t, Py_ssize_t m, const char *name) {
    if (ptr[0] != 0 || ptr[n] > m) goto bad;
    for (Py_ssize_t q = 0; q < n; q++)
        if (ptr[q + 1] < ptr[q]) goto bad;
    for (Py_ssize_t i = 0; i < ptr[n]; i++)
        if (t[i] < 0 || t[i] >= n) {
            PyErr_Format(PyExc_ValueError, "%s: target %d is not a state", name, (int)t[i]);
            return -1;
        }
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "%s: malformed CSR pointers", name);
    return -1;
}

typedef struct {
    int32_t level, q;
} HeapItem;

static int heap_push(HeapItem **h, Py_ssize_t *n, Py_ssize_t *cap, int32_t level, int32_t q) {
    if (*n == *cap) {
        const Py_ssize_t want = *cap ? 2 * *cap : 1024;
        HeapItem *p = realloc(*h, sizeof(HeapItem) * (size_t)want);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *h = p;
        *cap = want;
    }
    Py_ssize_t i = (*n)++;
    while (i > 0) {
        const Py_ssize_t up = (i - 1) / 2;
        if ((*h)[up].level <= level) break;
        (*h)[i] = (*h)[up];
        i = up;
    }
    (*h)[i] = (HeapItem){level, q};
    return 0;
}

static HeapItem heap_pop(HeapItem *h, Py_ssize_t *n) {
    const HeapItem top = h[0], last = h[--*n];
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1].level < h[c].level) c++;
        if (h[c].level >= last.level) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

PyDoc_STRVAR(completion_depth_doc,
"completion_depth(n, e_ptr, e_t, p_ptr, p_t, seal_lo, seal_exit, combo_q, dep_ptr, dep_t, term_ptr, term_dep,\n"
"                 term_w, by_callback, value, ends, h) -> None\n\n"
"automaton.completion_depth over int32 arrays, into ``h`` (int32, n, writable): for each of the n NFA states\n"
"the call depth still needed to reach the end of its machine (2**30: never).  Byte edges (``e_ptr``/``e_t``,\n"
"CSR) and epsilon edges (``p_ptr``/``p_t``) weigh nothing; a sealed block ``seal_lo[i] .. seal_exit[i]`` is\n"
"one edge from its first state to its exit (its interior's own edges are not read; it finishes as its first\n"
"state does).  Combination state ``combo_q[j]`` depends on states ``dep_t[dep_ptr[j]:dep_ptr[j + 1]]``; its\n"
"value is the largest ``term_w + h[term_dep]`` over ``term_ptr[j]:term_ptr[j + 1]``, or, where\n"
"``by_callback[j]`` (uint8), ``value(combo_q[j])``, which reads ``h`` (Python, for the lazy-head kinds\n"
"without a closed form).  ``ends`` are at depth 0.  Raises ValueError for malformed arrays.");

static PyObject *completion_depth(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n;
    PyObject *o[16], *value;
    if (!PyArg_ParseTuple(args, "nOOOOOOOOOOOOOOOO", &n, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                          &o[8], &o[9], &o[10], &o[11], &o[12], &value, &o[13], &o[14]))
        return NULL;
    if (n < 0 || n >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "completion_depth: bad state count");
        return NULL;
    }
    Buf e_ptr, e_t, p_ptr, p_t, s_lo, s_ex, cq, d_ptr, d_t, t_ptr, t_dep, t_w, cb, ends, hb;
    Buf *all[] = {&e_ptr, &e_t, &p_ptr, &p_t, &s_lo, &s_ex, &cq, &d_ptr, &d_t, &t_ptr, &t_dep, &t_w, &cb, &ends, &hb};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) all[i]->held = 0;
    PyObject *result = NULL;
    int32_t *rp_ptr = NULL, *rp_q = NULL, *rc_ptr = NULL, *rc_j = NULL, *cnt = NULL;
    uint8_t *skip = NULL, *settled = NULL;
    int32_t *own_cq = NULL, *own_tp = NULL, *own_td = NULL, *own_tw = NULL, *own_sl = NULL, *own_se = NULL,
            *own_en = NULL;
    uint8_t *own_cb = NULL;
    HeapItem *heap = NULL;
    Py_ssize_t heap_n = 0, heap_cap = 0;
    if (ints_arg(&e_ptr, o[0], n + 1, "e_ptr") < 0 || ints_arg(&e_t, o[1], 0, "e_t") < 0 ||
        ints_arg(&p_ptr, o[2], n + 1, "p_ptr") < 0 || ints_arg(&p_t, o[3], 0, "p_t") < 0 ||
        ints_arg(&s_lo, o[4], 0, "seal_lo") < 0 || ints_arg(&s_ex, o[5], buf_len(&s_lo), "seal_exit") < 0 ||
        ints_arg(&cq, o[6], 0, "combo_q") < 0 || ints_arg(&d_ptr, o[7], buf_len(&cq) + 1, "dep_ptr") < 0 ||
        ints_arg(&d_t, o[8], 0, "dep_t") < 0 || ints_arg(&t_ptr, o[9], buf_len(&cq) + 1, "term_ptr") < 0 ||
        ints_arg(&t_dep, o[10], 0, "term_dep") < 0 || ints_arg(&t_w, o[11], buf_len(&t_dep), "term_w") < 0)
        goto done;
    if (buf_get(&cb, o[12], 1, 0, "by_callback") < 0 || ints_arg(&ends, o[13], 0, "ends") < 0 ||
        buf_get(&hb, o[14], 4, 1, "h") < 0)
        goto done;
    const Py_ssize_t n_seal = buf_len(&s_lo), n_combo = buf_len(&cq);
    if (!cb.held || buf_len(&cb) < n_combo || !hb.held || buf_len(&hb) < n) {
        PyErr_SetString(PyExc_ValueError, "completion_depth: by_callback or h is too short");
        goto done;
    }
    const int32_t *EP = e_ptr.view.buf, *ET = e_t.view.buf, *PP = p_ptr.view.buf, *PT = p_t.view.buf;
    const int32_t *SL = s_lo.view.buf, *SE = s_ex.view.buf, *CQ = cq.view.buf, *DP = d_ptr.view.buf;
    const int32_t *DT = d_t.view.buf, *TP = t_ptr.view.buf, *TD = t_dep.view.buf, *TW = t_w.view.buf;
    const uint8_t *CB = cb.view.buf;
    const int32_t *EN = ends.view.buf;
    int32_t *h = hb.view.buf;
    if (csr_ok(EP, n, ET, buf_len(&e_t), "e_ptr") < 0 || csr_ok(PP, n, PT, buf_len(&p_t), "p_ptr") < 0) goto done;
    if (DP[0] != 0 || DP[n_combo] > buf_len(&d_t) || TP[0] != 0 || TP[n_combo] > buf_len(&t_dep)) {
        PyErr_SetString(PyExc_ValueError, "completion_depth: malformed combination pointers");
        goto done;
    }
    for (Py_ssize_t j = 0; j < n_combo; j++) {
        if (CQ[j] < 0 || CQ[j] >= n || DP[j + 1] < DP[j] || TP[j + 1] < TP[j]) {
            PyErr_Format(PyExc_ValueError, "completion_depth: malformed combination %zd", j);
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < DP[n_combo]; i++)
        if (DT[i] < 0 || DT[i] >= n) goto bad_state;
    for (Py_ssize_t i = 0; i < TP[n_combo]; i++)
        if (TD[i] < 0 || TD[i] >= n || TW[i] < 0) goto bad_state;
    for (Py_ssize_t i = 0; i < buf_len(&ends); i++)
        if (EN[i] < 0 || EN[i] >= n) goto bad_state;
    /* What is read after ``h`` is first written or ``value`` first runs is read from private copies of
     * the checked arrays: ``h`` may be a view of one of them, and the callback may write to any of them
     * (numpy arrays stay writable from Python while this holds them). */
    const Py_ssize_t n_ends = buf_len(&ends), n_terms = TP[n_combo];
    own_cq = copy_ints(&cq, n_combo);
    own_tp = copy_ints(&t_ptr, n_combo + 1);
    own_td = copy_ints(&t_dep, n_terms);
    own_tw = copy_ints(&t_w, n_terms);
    own_sl = copy_ints(&s_lo, n_seal);
    own_se = copy_ints(&s_ex, n_seal);
    own_en = copy_ints(&ends, n_ends);
    own_cb = malloc((size_t)(n_combo ? n_combo : 1));
    if (own_cq == NULL || own_tp == NULL || own_td == NULL || own_tw == NULL || own_sl == NULL ||
        own_se == NULL || own_en == NULL)
        goto done;
    if (own_cb == NULL) goto nomem;
    if (n_combo) memcpy(own_cb, CB, (size_t)n_combo);
    CQ = own_cq, TP = own_tp, TD = own_td, TW = own_tw, SL = own_sl, SE = own_se, EN = own_en, CB = own_cb;
    skip = calloc((size_t)(n ? n : 1), 1);
    settled = calloc((size_t)(n ? n : 1), 1);
    cnt = calloc((size_t)n + 1, sizeof(int32_t));
    rp_ptr = calloc((size_t)n + 1, sizeof(int32_t));
    rc_ptr = calloc((size_t)n + 1, sizeof(int32_t));
    if (skip == NULL || settled == NULL || cnt == NULL || rp_ptr == NULL || rc_ptr == NULL) goto nomem;
    for (Py_ssize_t i = 0; i < n_seal; i++) {
        if (SL[i] < 0 || SE[i] <= SL[i] || SE[i] >= n) goto bad_state;
        for (int32_t q = SL[i]; q < SE[i]; q++) skip[q] = 1;
    }
    /* reverse plain edges: counts, then CSR */
    for (Py_ssize_t q = 0; q < n; q++) {
        if (skip[q]) continue;
        for (int32_t i = EP[q]; i < EP[q + 1]; i++) rp_ptr[ET[i] + 1]++;
        for (int32_t i = PP[q]; i < PP[q + 1]; i++) rp_ptr[PT[i] + 1]++;
    }
    for (Py_ssize_t i = 0; i < n_seal; i++) rp_ptr[SE[i] + 1]++;
    for (Py_ssize_t q = 0; q < n; q++) rp_ptr[q + 1] += rp_ptr[q];
    rp_q = malloc(sizeof(int32_t) * (size_t)(rp_ptr[n] ? rp_ptr[n] : 1));
    if (rp_q == NULL) goto nomem;
    for (Py_ssize_t q = 0; q < n; q++) {
        if (skip[q]) continue;
        for (int32_t i = EP[q]; i < EP[q + 1]; i++) rp_q[rp_ptr[ET[i]] + cnt[ET[i]]++] = (int32_t)q;
        for (int32_t i = PP[q]; i < PP[q + 1]; i++) rp_q[rp_ptr[PT[i]] + cnt[PT[i]]++] = (int32_t)q;
    }
    for (Py_ssize_t i = 0; i < n_seal; i++) rp_q[rp_ptr[SE[i]] + cnt[SE[i]]++] = SL[i];
    /* reverse combination dependencies */
    memset(cnt, 0, sizeof(int32_t) * ((size_t)n + 1));
    for (Py_ssize_t i = 0; i < DP[n_combo]; i++) rc_ptr[DT[i] + 1]++;
    for (Py_ssize_t q = 0; q < n; q++) rc_ptr[q + 1] += rc_ptr[q];
    rc_j = malloc(sizeof(int32_t) * (size_t)(rc_ptr[n] ? rc_ptr[n] : 1));
    if (rc_j == NULL) goto nomem;
    for (Py_ssize_t j = 0; j < n_combo; j++)
        for (int32_t i = DP[j]; i < DP[j + 1]; i++) rc_j[rc_ptr[DT[i]] + cnt[DT[i]]++] = (int32_t)j;
    for (Py_ssize_t q = 0; q < n; q++) h[q] = DEPTH_INF;
    for (Py_ssize_t i = 0; i < n_ends; i++) {
        h[EN[i]] = 0;
        if (heap_push(&heap, &heap_n, &heap_cap, 0, EN[i]) < 0) goto done;
    }
    while (heap_n) {
        const HeapItem top = heap_pop(heap, &heap_n);
        const int32_t t = top.q, level = top.level;
        if (settled[t] || h[t] != level) continue;
        settled[t] = 1;
        for (int32_t i = rp_ptr[t]; i < rp_ptr[t + 1]; i++) {
            const int32_t q = rp_q[i];
            if (h[q] > level) {
                h[q] = level;
                if (heap_push(&heap, &heap_n, &heap_cap, level, q) < 0) goto done;
            }
        }
        for (int32_t i = rc_ptr[t]; i < rc_ptr[t + 1]; i++) {
            const int32_t j = rc_j[i], q = CQ[j];
            long long v = 0;
            if (CB[j]) {
                PyObject *got = PyObject_CallFunction(value, "i", (int)q);
                if (got == NULL) goto done;
                v = PyLong_AsLongLong(got);
                Py_DECREF(got);
                if (v == -1 && PyErr_Occurred()) goto done;
                if (v < 0) {
                    PyErr_Format(PyExc_ValueError, "completion_depth: value(%d) returned a negative depth %lld",
                                 (int)q, v);
                    goto done;
                }
            } else {
                for (int32_t k = TP[j]; k < TP[j + 1]; k++) {
                    const long long x = (long long)TW[k] + h[TD[k]];
                    if (x > v) v = x;
                }
            }
            if (v > DEPTH_INF) v = DEPTH_INF;
            if (v < h[q]) {
                h[q] = (int32_t)v;
                if (heap_push(&heap, &heap_n, &heap_cap, (int32_t)v, q) < 0) goto done;
            }
        }
    }
    for (Py_ssize_t i = 0; i < n_seal; i++) /* a sealed interior finishes as its first state does */
        for (int32_t q = SL[i] + 1; q < SE[i]; q++) h[q] = h[SL[i]];
    result = Py_None;
    Py_INCREF(result);
    goto done;
bad_state:
    PyErr_SetString(PyExc_ValueError, "completion_depth: a state index is out of range");
    goto done;
nomem:
    PyErr_NoMemory();
done:
    free(skip);
    free(settled);
    free(cnt);
    free(rp_ptr);
    free(rp_q);
    free(rc_ptr);
    free(rc_j);
    free(heap);
    free(own_cq);
    free(own_tp);
    free(own_td);
    free(own_tw);
    free(own_sl);
    free(own_se);
    free(own_en);
    free(own_cb);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) buf_release(all[i]);
    return result;
}

/* A growable int32 list (the weight-0 cycle search's machines, walk stack and callee pairs). */
typedef struct {
    int32_t *v;
    Py_ssize_t n, cap;
} I32List;

static int i32_push(I32List *l, int32_t x) {
    if (l->n == l->cap) {
        const Py_ssize_t want = l->cap ? 2 * l->cap : 256;
        int32_t *p = realloc(l->v, sizeof(int32_t) * (size_t)want);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        l->v = p;
        l->cap = want;
    }
    l->v[l->n++] = x;
    return 0;
}

PyDoc_STRVAR(zero_weight_cycle_doc,
"zero_weight_cycle(n, e_ptr, e_t, p_ptr, p_t, seal_lo, seal_exit, spec_q, out_ptr, out_t, out_w, more_ptr,\n"
"                  more_t, root) -> int | None\n\n"
"automaton.zero_weight_cycle over int32 arrays: the start state of a machine on a cycle of calls that weighs\n"
"0 and is reachable from the machine starting at ``root``, or None; the same machine the Python search\n"
"returns (the same walk and search order).  A machine's walk follows byte edges (``e_ptr``/``e_t``, CSR),\n"
"then epsilon edges (``p_ptr``/``p_t``), from its start; a sealed block's first state ``seal_lo[i]`` leads\n"
"only to ``seal_exit[i]``.  Special state ``spec_q[j]`` calls the machines ``out_t[out_ptr[j]:out_ptr[j +\n"
"1]]`` with weights ``out_w`` and its walk goes on to ``more_t[more_ptr[j]:more_ptr[j + 1]]``.  Raises\n"
"ValueError for malformed arrays.");

static PyObject *zero_weight_cycle(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n;
    int root;
    PyObject *o[12];
    if (!PyArg_ParseTuple(args, "nOOOOOOOOOOOOi", &n, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                          &o[8], &o[9], &o[10], &o[11], &root))
        return NULL;
    if (n < 0 || n >= INT32_MAX || root < 0 || root >= n) {
        PyErr_SetString(PyExc_ValueError, "zero_weight_cycle: bad state count or root");
        return NULL;
    }
    Buf e_ptr, e_t, p_ptr, p_t, s_lo, s_ex, sq, o_ptr, o_t, o_w, m_ptr, m_t;
    Buf *all[] = {&e_ptr, &e_t, &p_ptr, &p_t, &s_lo, &s_ex, &sq, &o_ptr, &o_t, &o_w, &m_ptr, &m_t};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) all[i]->held = 0;
    PyObject *result = NULL;
    int32_t *seal_to = NULL, *spec_of = NULL, *stamp = NULL, *mach = NULL, *pos = NULL;
    uint8_t *color = NULL;
    I32List order = {0}, todo = {0}, pairs = {0}, first = {0}, stack = {0};
    if (ints_arg(&e_ptr, o[0], n + 1, "e_ptr") < 0 || ints_arg(&e_t, o[1], 0, "e_t") < 0 ||
        ints_arg(&p_ptr, o[2], n + 1, "p_ptr") < 0 || ints_arg(&p_t, o[3], 0, "p_t") < 0 ||
        ints_arg(&s_lo, o[4], 0, "seal_lo") < 0 || ints_arg(&s_ex, o[5], buf_len(&s_lo), "seal_exit") < 0 ||
        ints_arg(&sq, o[6], 0, "spec_q") < 0 || ints_arg(&o_ptr, o[7], buf_len(&sq) + 1, "out_ptr") < 0 ||
        ints_arg(&o_t, o[8], 0, "out_t") < 0 || ints_arg(&o_w, o[9], buf_len(&o_t), "out_w") < 0 ||
        ints_arg(&m_ptr, o[10], buf_len(&sq) + 1, "more_ptr") < 0 || ints_arg(&m_t, o[11], 0, "more_t") < 0)
        goto done;
    const int32_t *EP = e_ptr.view.buf, *ET = e_t.view.buf, *PP = p_ptr.view.buf, *PT = p_t.view.buf;
    const int32_t *SL = s_lo.view.buf, *SE = s_ex.view.buf, *SQ = sq.view.buf, *OP = o_ptr.view.buf;
    const int32_t *OT = o_t.view.buf, *OW = o_w.view.buf, *MP = m_ptr.view.buf, *MT = m_t.view.buf;
    const Py_ssize_t n_seal = buf_len(&s_lo), n_spec = buf_len(&sq);
    if (csr_ok(EP, n, ET, buf_len(&e_t), "e_ptr") < 0 || csr_ok(PP, n, PT, buf_len(&p_t), "p_ptr") < 0) goto done;
    if (OP[0] != 0 || OP[n_spec] > buf_len(&o_t) || MP[0] != 0 || MP[n_spec] > buf_len(&m_t)) {
        PyErr_SetString(PyExc_ValueError, "zero_weight_cycle: malformed special-state pointers");
        goto done;
    }
    seal_to = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    spec_of = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    stamp = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    mach = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    color = calloc((size_t)(n ? n : 1), 1);
    if (seal_to == NULL || spec_of == NULL || stamp == NULL || mach == NULL || color == NULL) goto nomem;
    for (Py_ssize_t q = 0; q < n; q++) seal_to[q] = spec_of[q] = stamp[q] = mach[q] = -1;
    for (Py_ssize_t i = 0; i < n_seal; i++) {
        if (SL[i] < 0 || SL[i] >= n || SE[i] < 0 || SE[i] >= n) goto bad_state;
        seal_to[SL[i]] = SE[i];
    }
    for (Py_ssize_t j = 0; j < n_spec; j++) {
        if (SQ[j] < 0 || SQ[j] >= n || spec_of[SQ[j]] >= 0 || OP[j + 1] < OP[j] || MP[j + 1] < MP[j]) {
            PyErr_Format(PyExc_ValueError, "zero_weight_cycle: malformed special state %zd", j);
            goto done;
        }
        spec_of[SQ[j]] = (int32_t)j;
    }
    for (Py_ssize_t i = 0; i < OP[n_spec]; i++)
        if (OT[i] < 0 || OT[i] >= n) goto bad_state;
    for (Py_ssize_t i = 0; i < MP[n_spec]; i++)
        if (MT[i] < 0 || MT[i] >= n) goto bad_state;
    /* every machine reachable from root, breadth first, each walked once: its callees are the pairs
       (start, weight) pairs.v[2 * first[k] ..] up to the next machine's first */
    if (i32_push(&order, root) < 0) goto done;
    mach[root] = 0;
    for (Py_ssize_t k = 0; k < order.n; k++) {
        const int32_t start = order.v[k];
        if (i32_push(&first, (int32_t)(pairs.n / 2)) < 0) goto done;
        todo.n = 0;
        stamp[start] = (int32_t)k;
        if (i32_push(&todo, start) < 0) goto done;
        while (todo.n) {
            const int32_t q = todo.v[--todo.n];
#define ZWC_VISIT(t_)                                                    \
            do {                                                         \
                const int32_t t__ = (t_);                                \
                if (stamp[t__] != (int32_t)k) {                          \
                    stamp[t__] = (int32_t)k;                             \
                    if (i32_push(&todo, t__) < 0) goto done;             \
                }                                                        \
            } while (0)
            if (seal_to[q] >= 0) {
                ZWC_VISIT(seal_to[q]);
            } else {
                for (int32_t i = EP[q]; i < EP[q + 1]; i++) ZWC_VISIT(ET[i]);
                for (int32_t i = PP[q]; i < PP[q + 1]; i++) ZWC_VISIT(PT[i]);
            }
            const int32_t j = spec_of[q];
            if (j >= 0) {
                for (int32_t i = OP[j]; i < OP[j + 1]; i++) {
                    if (i32_push(&pairs, OT[i]) < 0 || i32_push(&pairs, OW[i]) < 0) goto done;
                    if (mach[OT[i]] < 0) {
                        mach[OT[i]] = (int32_t)order.n;
                        if (i32_push(&order, OT[i]) < 0) goto done;
                    }
                }
                for (int32_t i = MP[j]; i < MP[j + 1]; i++) ZWC_VISIT(MT[i]);
            }
#undef ZWC_VISIT
        }
    }
    if (i32_push(&first, (int32_t)(pairs.n / 2)) < 0) goto done;
    /* depth-first search over the weight-0 calls, every machine a root once in that order */
    pos = malloc(sizeof(int32_t) * (size_t)(order.n ? order.n : 1));
    if (pos == NULL) goto nomem;
    for (Py_ssize_t k = 0; k < order.n; k++) {
        if (color[order.v[k]]) continue;
        color[order.v[k]] = 1;
        stack.n = 0;
        if (i32_push(&stack, (int32_t)k) < 0) goto done;
        pos[k] = first.v[k];
        while (stack.n) {
            const int32_t m = stack.v[stack.n - 1];
            int pushed = 0;
            while (pos[m] < first.v[m + 1]) {
                const int32_t c = pairs.v[2 * pos[m]], w = pairs.v[2 * pos[m] + 1];
                pos[m]++;
                if (w) continue;
                if (color[c] == 1) {
                    result = PyLong_FromLong(c);
                    goto done;
                }
                if (color[c] == 0) {
                    color[c] = 1;
                    const int32_t mc = mach[c];
                    pos[mc] = first.v[mc];
                    if (i32_push(&stack, mc) < 0) goto done;
                    pushed = 1;
                    break;
                }
            }
            if (!pushed) {
                color[order.v[m]] = 2;
                stack.n--;
            }
        }
    }
    result = Py_None;
    Py_INCREF(result);
    goto done;
bad_state:
    PyErr_SetString(PyExc_ValueError, "zero_weight_cycle: a state index is out of range");
    goto done;
nomem:
    PyErr_NoMemory();
done:
    free(seal_to);
    free(spec_of);
    free(stamp);
    free(mach);
    free(color);
    free(pos);
    free(order.v);
    free(todo.v);
    free(pairs.v);
    free(first.v);
    free(stack.v);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) buf_release(all[i]);
    return result;
}

PyDoc_STRVAR(mask_hash_doc,
"mask_hash(words) -> int\n\n"
"A 64-bit hash (an int >= 0) of the packed mask ``words`` (an array of 4-byte items, any length): equal\n"
"masks hash alike, so the mask cache compares in full only masks whose hashes agree.  Raises TypeError\n"
"for an object that is not such an array.");

static PyObject *mask_hash(PyObject *self, PyObject *o_words) {
    (void)self;
    Buf w;
    w.held = 0;
    if (buf_get(&w, o_words, 4, 0, "words") < 0) {
        buf_release(&w);
        return NULL;
    }
    if (!w.held) {
        PyErr_SetString(PyExc_TypeError, "mask_hash: words must be an array");
        return NULL;
    }
    const uint32_t *W = w.view.buf;
    const Py_ssize_t n = buf_len(&w);
    /* four lanes of multiply-xor over pairs of words (independent, so the multiplies overlap), then
     * mixed: a mask of 4,000 words in well under a microsecond */
    const uint64_t P = 0x9E3779B97F4A7C15ULL;
    uint64_t h[4] = {P ^ (uint64_t)n, 0xC2B2AE3D27D4EB4FULL, 0x165667B19E3779F9ULL, 0xD6E8FEB86659FD93ULL};
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 4; k++) {
            const uint64_t x = (uint64_t)W[i + 2 * k] | (uint64_t)W[i + 2 * k + 1] << 32;
            h[k] = (h[k] ^ x) * P;
            h[k] ^= h[k] >> 31;
        }
    for (; i < n; i++) {
        h[0] = (h[0] ^ W[i]) * P;
        h[0] ^= h[0] >> 31;
    }
    uint64_t r = h[0];
    for (int k = 1; k < 4; k++) r = (r ^ (h[k] >> 17 | h[k] << 47)) * 0xFF51AFD7ED558CCDULL;
    r ^= r >> 33;
    buf_release(&w);
    return PyLong_FromUnsignedLongLong(r >> 1); /* >= 0 and below 2**63: a small Python int */
}

PyDoc_STRVAR(write_words_doc,
"write_words(packed, out, width) -> bool\n\n"
"Copy the packed mask ``packed`` (4-byte items) into the first ceil(width / 32) words of ``out`` (writable,\n"
"4-byte items) for a logits row ``width`` bits wide: words past the end of ``packed`` are zeroed and the\n"
"bits at and beyond ``width`` cleared; ``out``'s later words are left as they are.  Returns whether any\n"
"bit is set in what was written.  Raises ValueError for width < 1 or an ``out`` shorter than that.");

static PyObject *write_words(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_packed, *o_out;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "OOn", &o_packed, &o_out, &width)) return NULL;
    Buf src, dst;
    src.held = dst.held = 0;
    PyObject *result = NULL;
    if (buf_get(&src, o_packed, 4, 0, "packed") < 0 || buf_get(&dst, o_out, 4, 1, "out") < 0) goto done;
    if (!src.held || !dst.held) {
        PyErr_SetString(PyExc_TypeError, "write_words: packed and out must be arrays");
        goto done;
    }
    /* width / 32 rounded up without adding first: width + 31 wraps near PY_SSIZE_T_MAX */
    const Py_ssize_t n_out = width > 0 ? width / 32 + (width % 32 != 0) : 0;
    if (width < 1 || buf_len(&dst) < n_out) {
        PyErr_Format(PyExc_ValueError, "write_words: width %zd needs %zd words of out, which has %zd", width,
                     n_out, buf_len(&dst));
        goto done;
    }
    const uint32_t *S = src.view.buf;
    uint32_t *D = dst.view.buf;
    const Py_ssize_t n = buf_len(&src) < n_out ? buf_len(&src) : n_out;
    if (n) memmove(D, S, sizeof(uint32_t) * (size_t)n); /* packed and out may be views of one array */
    if (n_out > n) memset(D + n, 0, sizeof(uint32_t) * (size_t)(n_out - n));
    if (width % 32) D[n_out - 1] &= ((uint32_t)1 << (width % 32)) - 1;
    uint32_t any = 0;
    for (Py_ssize_t i = 0; i < n_out; i++) any |= D[i];
    result = PyBool_FromLong(any != 0);
done:
    buf_release(&src);
    buf_release(&dst);
    return result;
}

PyDoc_STRVAR(order_groups_doc,
"order_groups(flat, start, length, ids, rows, g_lo, g_hi, g_off, lcp, mixed_ids, ends) -> bytes\n\n"
"Lay out groups of token rows for groups_walk.  The groups ``rows[g_lo[g]:g_hi[g]]`` (int64) follow one\n"
"another from 0 to ``len(rows)``; each group's rows are sorted (in place) by their bytes from byte\n"
"``g_off[g]`` on, lexicographically (equal bytes in any order).  Per row i it writes how many of those bytes\n"
"it shares with the row before it in its group into ``lcp[i]`` (uint8; 0 for a group's first row, at most\n"
"255: a shorter prefix is still shared), its token id into ``mixed_ids[i]`` (int32), and where the bytes it\n"
"does not share end in the returned tails into ``ends[i]`` (int32; they start at ``ends[i - 1]``, 0 for\n"
"i = 0).  ``flat``, ``start``, ``length``, ``ids``: the token rows as for groups_walk.  Raises ValueError for\n"
"an index out of range.");

static PyObject *order_groups(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_flat, *o_start, *o_len, *o_ids, *o_rows, *o_glo, *o_ghi, *o_goff, *o_lcp, *o_mids, *o_ends;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOO", &o_flat, &o_start, &o_len, &o_ids, &o_rows, &o_glo, &o_ghi, &o_goff,
                          &o_lcp, &o_mids, &o_ends))
        return NULL;
    Buf flat, st, ln, ids, rows, glo, ghi, goff, lcp, mids, ends;
    Buf *all[] = {&flat, &st, &ln, &ids, &rows, &glo, &ghi, &goff, &lcp, &mids, &ends};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) all[i]->held = 0;
    Suffix *s = NULL, *tmp = NULL;
    Segment *seg = NULL;
    uint8_t *out = NULL;
    PyObject *result = NULL;
    if (buf_get(&flat, o_flat, 1, 0, "flat") < 0 || buf_get(&st, o_start, 8, 0, "start") < 0 ||
        buf_get(&ln, o_len, 8, 0, "length") < 0 || buf_get(&ids, o_ids, 8, 0, "ids") < 0 ||
        buf_get(&rows, o_rows, 8, 1, "rows") < 0 || buf_get(&glo, o_glo, 8, 0, "g_lo") < 0 ||
        buf_get(&ghi, o_ghi, 8, 0, "g_hi") < 0 || buf_get(&goff, o_goff, 8, 0, "g_off") < 0 ||
        buf_get(&lcp, o_lcp, 1, 1, "lcp") < 0 || buf_get(&mids, o_mids, 4, 1, "mixed_ids") < 0 ||
        buf_get(&ends, o_ends, 4, 1, "ends") < 0)
        goto done;
    const Py_ssize_t n_rows = buf_len(&st), n_flat = buf_len(&flat), n = buf_len(&rows), n_groups = buf_len(&glo);
    if (buf_len(&ln) != n_rows || buf_len(&ids) != n_rows || buf_len(&lcp) != n || buf_len(&mids) != n ||
        buf_len(&ends) != n || buf_len(&ghi) != n_groups || buf_len(&goff) != n_groups) {
        PyErr_SetString(PyExc_ValueError, "order_groups: arrays disagree in length");
        goto done;
    }
    const uint8_t *F = flat.view.buf;
    const int64_t *S = st.view.buf, *L = ln.view.buf, *ID = ids.view.buf, *LO = glo.view.buf, *HI = ghi.view.buf,
                  *OFF = goff.view.buf;
    int64_t *R = rows.view.buf;
    uint8_t *P = lcp.view.buf;
    int32_t *MI = mids.view.buf, *E = ends.view.buf;
    /* the groups tile the rows */
    int64_t widest = 0;
    for (Py_ssize_t g = 0; g < n_groups; g++) {
        if (LO[g] != (g ? HI[g - 1] : 0) || HI[g] < LO[g] || HI[g] > n || (g == n_groups - 1 && HI[g] != n) ||
            OFF[g] < 0) {
            bad_index("row range of group", g);
            goto done;
        }
        if (HI[g] - LO[g] > widest) widest = HI[g] - LO[g];
    }
    if (n > 0 && n_groups == 0) {
        bad_index("row range of group", 0);
        goto done;
    }
    s = malloc(sizeof(Suffix) * (size_t)(widest + 1));
    tmp = malloc(sizeof(Suffix) * (size_t)(widest + 1));
    seg = malloc(sizeof(Segment) * (size_t)(widest / 2 + 1));
    if (s == NULL || tmp == NULL || seg == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t used = 0, cap = 0;
    for (Py_ssize_t g = 0; g < n_groups; g++) {
        const int64_t lo = LO[g], m = HI[g] - LO[g], off = OFF[g];
        int64_t bytes = 0; /* the group's bytes: an upper bound of its tails */
        for (int64_t i = 0; i < m; i++) {
            const int64_t r = R[lo + i];
            if (r < 0 || r >= n_rows) {
                bad_index("token row", r);
                goto done;
            }
            if (S[r] < 0 || S[r] > n_flat || L[r] < 0 || L[r] > n_flat - S[r] || off > L[r]) {
                bad_index("byte range of token row", r);
                goto done;
            }
            if (ID[r] < 0 || ID[r] > INT32_MAX) {
                bad_index("token id", ID[r]);
                goto done;
            }
            s[i] = (Suffix){0, F + S[r] + off, L[r] - off, r};
            bytes += L[r] - off;
        }
        if (bytes > INT32_MAX - used) {
            PyErr_SetString(PyExc_OverflowError, "order_groups: the tails do not fit int32 offsets");
            goto done;
        }
        if (used + bytes > cap) {
            cap = cap ? cap : 1 << 16;
            while (cap < used + bytes) cap *= 2;
            uint8_t *grown = realloc(out, (size_t)cap);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            out = grown;
        }
        /* most groups are in order already: laid out as they are, else sorted and laid out again */
        int64_t end = lay_out(s, m, lo, 1, ID, R, P, MI, E, out, used);
        if (end < 0) {
            sort_suffixes(s, tmp, seg, (Py_ssize_t)m);
            end = lay_out(s, m, lo, 0, ID, R, P, MI, E, out, used);
        }
        used = end;
    }
    result = PyBytes_FromStringAndSize(used ? (const char *)out : "", (Py_ssize_t)used);
done:
    free(s);
    free(tmp);
    free(seg);
    free(out);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) buf_release(all[i]);
    return result;
}

PyDoc_STRVAR(widest_set_doc,
"widest_set(table, sid, class_sizes, min_bytes) -> bytes | None\n\n"
"The classes (ascending, one byte each) of the largest set of bytes that row ``sid`` of ``table``\n"
"(int32, (states, classes), fewer than 257 classes) sends to one live state (on a tie, the state its\n"
"lowest class leads to); None when no live state gets ``min_bytes`` bytes.  ``class_sizes``: bytes per\n"
"class (int64).");

static PyObject *widest_set(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_table, *o_sizes;
    Py_ssize_t sid, min_bytes;
    if (!PyArg_ParseTuple(args, "OnOn", &o_table, &sid, &o_sizes, &min_bytes)) return NULL;
    Py_buffer table;
    Buf sizes;
    sizes.held = 0;
    if (PyObject_GetBuffer(o_table, &table, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0) return NULL;
    PyObject *result = NULL;
    if (buf_get(&sizes, o_sizes, 8, 0, "class_sizes") < 0) goto done;
    if (table.itemsize != 4 || !int_format(table.format) || table.ndim != 2 || table.shape[1] > 256 ||
        table.shape[1] != buf_len(&sizes) || sid < 0 || sid >= table.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "widest_set: table must be int32 (states, classes <= 256) holding sid, "
                                          "with one size per class");
        goto done;
    }
    const Py_ssize_t nc = table.shape[1];
    const int32_t *row = (const int32_t *)table.buf + sid * nc;
    const int64_t *size = sizes.view.buf;
    /* a row has at most nc distinct targets: sum the bytes per target, first met first */
    int32_t target[256];
    int64_t width[256];
    Py_ssize_t n_t = 0, best = -1;
    for (Py_ssize_t c = 0; c < nc; c++) {
        if (row[c] < 0) continue;
        Py_ssize_t j = 0;
        while (j < n_t && target[j] != row[c]) j++;
        if (j == n_t) {
            target[n_t] = row[c];
            width[n_t++] = 0;
        }
        width[j] += size[c];
    }
    /* the first target met with the most bytes, as max() over a dict in insertion order picks */
    for (Py_ssize_t j = 0; j < n_t; j++)
        if (best < 0 || width[j] > width[best]) best = j;
    if (best < 0 || width[best] < min_bytes) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    char classes[256];
    Py_ssize_t n = 0;
    for (Py_ssize_t c = 0; c < nc; c++)
        if (row[c] == target[best]) classes[n++] = (char)c;
    result = PyBytes_FromStringAndSize(classes, n);
done:
    buf_release(&sizes);
    PyBuffer_Release(&table);
    return result;
}

static PyObject *plain_row(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap, *automaton, *configs, *plain_memo, *escape_memo, *made, *intern, *escape, *interner = Py_None;
    int sid;
    PyObject *max_depth_obj;
    if (!PyArg_ParseTuple(args, "OOiOOO!O!O!OO|O", &cap, &automaton, &sid, &configs, &max_depth_obj, &PyDict_Type,
                          &plain_memo, &PyDict_Type, &escape_memo, &PyDict_Type, &made, &intern, &escape, &interner))
        return NULL;
    Interner in;
    const int with_in = interner_open(&in, interner);
    if (with_in < 0) return NULL;
    long long max_depth;
    if (read_max_depth(max_depth_obj, &max_depth) < 0) return NULL;
    /* exactly a frozenset (no Python-level __iter__ making pairs on the fly): its pairs, and so the
     * nodes borrowed below, live as long as the call */
    if (!PyFrozenSet_CheckExact(configs)) {
        PyErr_Format(PyExc_TypeError, "configs must be a frozenset of (NFA state, stack node) pairs, not %.100s",
                     Py_TYPE(configs)->tp_name);
        return NULL;
    }
    NfaTab *t = PyCapsule_GetPointer(cap, NFA_CAPSULE);
    if (t == NULL) return NULL;
    const int ok = plain_row_core(t, automaton, sid, configs, max_depth, plain_memo, escape_memo, made, intern, escape,
                                  with_in ? &in : NULL);
    if (ok < 0) return NULL;
    return PyBool_FromLong(ok);
}

/* ``ctx``: None (0), or Automaton.row_context()'s tuple (tables, states, max_depth, plain_memo,
 * escape_memo, made, intern, escape, generation, interner), read into ``r`` (1); -1 on error. */
static int rowctx_open(RowCtx *r, PyObject *ctx) {
    if (ctx == Py_None) return 0;
    PyObject *cap, *max_depth_obj, *gen;
    if (!PyTuple_Check(ctx)) {
        PyErr_SetString(PyExc_TypeError, "rows must be None or Automaton.row_context()'s tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(ctx, "OO!OO!O!O!OOOO;rows must be Automaton.row_context()'s tuple", &cap, &PyList_Type,
                          &r->states, &max_depth_obj, &PyDict_Type, &r->plain_memo, &PyDict_Type, &r->escape_memo,
                          &PyDict_Type, &r->made, &r->intern, &r->escape, &gen, &r->interner))
        return -1;
    if ((r->with_in = interner_open(&r->in, r->interner)) < 0) return -1;
    r->t = PyCapsule_GetPointer(cap, NFA_CAPSULE);
    if (r->t == NULL || read_max_depth(max_depth_obj, &r->max_depth) < 0) return -1;
    r->generation = PyLong_AsLongLong(gen);
    if (r->generation == -1 && PyErr_Occurred()) return -1;
    return 1;
}

/* Mark the row of ``sid`` done in ``automaton.row_done`` (read now: interning a state may have
 * replaced it by a larger array).  0, or -1 on error. */
static int mark_row_done(PyObject *automaton, int32_t sid) {
    PyObject *obj = PyObject_GetAttr(automaton, S_row_done);
    if (obj == NULL) return -1;
    Py_buffer b;
    if (PyObject_GetBuffer(obj, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND | PyBUF_WRITABLE) < 0) {
        Py_DECREF(obj);
        return -1;
    }
    const int ok = b.itemsize == 1 && b.ndim == 1 && b.format != NULL && strcmp(b.format, "?") == 0 &&
                   sid < b.shape[0];
    if (ok)
        ((uint8_t *)b.buf)[sid] = 1;
    else
        PyErr_SetString(PyExc_ValueError, "automaton.row_done must be a bool array holding the state");
    PyBuffer_Release(&b);
    Py_DECREF(obj);
    return ok ? 0 : -1;
}

/* A walk's missing row, computed here as Automaton._native_row would (plain_row_core, then
 * ``row_done``), without the Python frames of step_row -> ensure_rows -> _compute_row ->
 * _native_row -> native.plain_row around each row.  0 leaves the row to ``step_class`` (the
 * automaton's own path): the tables are full, a node id passes int32, a configuration is not in
 * the copied NFA, or an eviction started a new generation (the context's memos and states are the
 * old one's: the walk then takes the automaton's path for every row).  1 when done, -1 on error.
 * The accounting (native.count_tables, ``made``'s new entries) is the walk's caller's, after it. */
static int direct_row(Dfa *d, int32_t sid) {
    RowCtx *r = d->rows;
    PyObject *g = PyObject_GetAttr(d->automaton, S_generation);
    if (g == NULL) return -1;
    const long long gen = PyLong_AsLongLong(g);
    Py_DECREF(g);
    if (gen == -1 && PyErr_Occurred()) return -1;
    if (gen != r->generation) {
        d->rows = NULL;
        return 0;
    }
    if (sid >= PyList_GET_SIZE(r->states)) return 0;
    PyObject *configs = PyObject_GetAttr(PyList_GET_ITEM(r->states, sid), S_configs);
    if (configs == NULL) return -1;
    int ok = -1;
    if (PyFrozenSet_CheckExact(configs))
        ok = plain_row_core(r->t, d->automaton, sid, configs, r->max_depth, r->plain_memo, r->escape_memo, r->made,
                            r->intern, r->escape, r->with_in ? &r->in : NULL);
    else
        PyErr_SetString(PyExc_TypeError, "a DFA state's configs must be a frozenset");
    Py_DECREF(configs);
    if (ok <= 0) return ok;
    return mark_row_done(d->automaton, sid) < 0 ? -1 : 1;
}

static PyMethodDef methods[] = {
    {"trie_walk", trie_walk, METH_VARARGS, trie_walk_doc},
    {"groups_walk", groups_walk, METH_VARARGS, groups_walk_doc},
    {"order_groups", order_groups, METH_VARARGS, order_groups_doc},
    {"widest_set", widest_set, METH_VARARGS, widest_set_doc},
    {"run_chain", run_chain, METH_VARARGS, run_chain_doc},
    {"pack_ids", pack_ids, METH_VARARGS, pack_ids_doc},
    {"mask_hash", mask_hash, METH_O, mask_hash_doc},
    {"completion_depth", completion_depth, METH_VARARGS, completion_depth_doc},
    {"zero_weight_cycle", zero_weight_cycle, METH_VARARGS, zero_weight_cycle_doc},
    {"write_words", write_words, METH_VARARGS, write_words_doc},
    {"flatten_nfa", flatten_nfa, METH_VARARGS, flatten_nfa_doc},
    {"nfa_tables", nfa_tables, METH_VARARGS, nfa_tables_doc},
    {"nfa_tables_bytes", nfa_tables_bytes, METH_O, nfa_tables_bytes_doc},
    {"nfa_tables_clear", nfa_tables_clear, METH_O, nfa_tables_clear_doc},
    {"plain_row", plain_row, METH_VARARGS, plain_row_doc},
    {NULL, NULL, 0, NULL},
};

/* Bumped with every change of a function's arguments or results (engine/native.py checks it). */
#define WALK_API_VERSION 9

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walk", "Native token walks over a lazily built DFA table (see engine/native.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walk(void) {
    static PyObject **const names[] = {&S_table, &S_depth, &S_configs, &S_generation, &S_row_done, &S_accepting};
    static const char *const texts[] = {"table", "depth", "configs", "generation", "row_done", "accepting"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (*names[i] == NULL && (*names[i] = PyUnicode_InternFromString(texts[i])) == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    /* the calling convention of these functions: engine/native.py refuses a build of another one */
    if (m != NULL && PyModule_AddIntConstant(m, "API_VERSION", WALK_API_VERSION) < 0) Py_CLEAR(m);
    return m;
}
