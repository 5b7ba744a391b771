/* Native token walks over a lazily built DFA transition table.
 *
 * The mask of a DFA state is the set of tokens whose bytes lead from it to a live
 * state.  engine/mask.py and engine/runs.py find those tokens with vectorised numpy
 * walks; every numpy call costs a few microseconds, so a walk that ends after a few
 * hundred nodes is dominated by call overhead.  The two loops here do the same walks
 * node by node in C:
 *
 *   trie_walk: depth-first over a token trie (tokens/trie.py), pruning a subtree as
 *              soon as its prefix is refused;
 *   rows_walk: over single tokens (runs.py's CSR token bytes), from a given state and
 *              byte offset each.
 *
 * The DFA is built lazily: a cell may be UNKNOWN (-2).  Then the walk calls
 * ``step(state, cls)`` (the automaton's ``step_row``), which computes it (and may replace
 * ``automaton.table`` by a larger array), and re-reads the table.  After each such
 * call, and every few thousand steps, it calls ``check()``, which raises past a
 * deadline (a row build is the costliest chunk of a walk); an exception from either
 * callback ends the walk and propagates.  Nothing here allocates Python objects per
 * step, and every index read from an input array is bounds-checked: a bad array gives
 * a ValueError, never a crash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

typedef struct {
    PyObject *automaton;
    PyObject *step_class; /* bound method */
    PyObject *table_obj;  /* the array the buffer below belongs to */
    PyObject *check;      /* called after each computed cell: a row build is a chunk of work */
    Py_buffer table;
    Py_ssize_t n_rows;
    Py_ssize_t n_classes;
} Dfa;

static int dfa_load_table(Dfa *d) {
    PyObject *obj = PyObject_GetAttrString(d->automaton, "table");
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

/* The state after a byte of class ``c`` in ``state``; DEAD if refused; -3 on error. */
static inline int32_t dfa_step(Dfa *d, int32_t state, int32_t c) {
    if (state < d->n_rows) {
        int32_t nxt = ((const int32_t *)d->table.buf)[(Py_ssize_t)state * d->n_classes + c];
        if (nxt != UNKNOWN) return nxt;
    }
    PyObject *got = PyObject_CallFunction(d->step_class, "ii", (int)state, (int)c);
    if (got == NULL) return -3;
    long v = PyLong_AsLong(got);
    Py_DECREF(got);
    if (v == -1 && PyErr_Occurred()) return -3;
    if (dfa_load_table(d) < 0) return -3;
    if (call_check(d->check) < 0) return -3;
    return (int32_t)v;
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

PyDoc_STRVAR(trie_walk_doc,
"trie_walk(automaton, step, n_classes, class_of_byte, byte, child_lo, child_hi, tok_lo, tok_hi, tok_ids,\n"
"          start, words, out_ids, out_states, check) -> int\n\n"
"Walk the trie depth-first from DFA state ``start``; for every token whose bytes lead to a live\n"
"state, set its bit in ``words`` (uint32, or None) and append its id and end state to ``out_ids``\n"
"and ``out_states`` (int64, as long as ``tok_ids``, or None).  Returns the number of tokens found.");

static PyObject *trie_walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *automaton, *step, *o_cls, *o_byte, *o_clo, *o_chi, *o_tlo, *o_thi, *o_tids, *o_words, *o_oids, *o_ost, *check;
    Py_ssize_t n_classes;
    int start;
    if (!PyArg_ParseTuple(args, "OOnOOOOOOOiOOOO", &automaton, &step, &n_classes, &o_cls, &o_byte, &o_clo, &o_chi, &o_tlo,
                          &o_thi, &o_tids, &start, &o_words, &o_oids, &o_ost, &check))
        return NULL;
    Buf cls, byte, clo, chi, tlo, thi, tids, words, oids, ost;
    Buf *all[] = {&cls, &byte, &clo, &chi, &tlo, &thi, &tids, &words, &oids, &ost};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) all[i]->held = 0;
    Dfa d;
    int dfa_ok = 0;
    int32_t *stack = NULL;
    Py_ssize_t found = -1;
    if (buf_get(&cls, o_cls, 4, 0, "class_of_byte") < 0 || buf_get(&byte, o_byte, 1, 0, "byte") < 0 ||
        buf_get(&clo, o_clo, 4, 0, "child_lo") < 0 || buf_get(&chi, o_chi, 4, 0, "child_hi") < 0 ||
        buf_get(&tlo, o_tlo, 4, 0, "tok_lo") < 0 || buf_get(&thi, o_thi, 4, 0, "tok_hi") < 0 ||
        buf_get(&tids, o_tids, 4, 0, "tok_ids") < 0 || buf_get(&words, o_words, 4, 1, "words") < 0 ||
        buf_get(&oids, o_oids, 8, 1, "out_ids") < 0 || buf_get(&ost, o_ost, 8, 1, "out_states") < 0)
        goto done;
    const Py_ssize_t n_nodes = buf_len(&byte), n_tok = buf_len(&tids), n_words = buf_len(&words);
    if (buf_len(&cls) != 256 || buf_len(&clo) != n_nodes || buf_len(&chi) != n_nodes || buf_len(&tlo) != n_nodes ||
        buf_len(&thi) != n_nodes || n_nodes < 1) {
        PyErr_SetString(PyExc_ValueError, "trie arrays disagree in length (or class_of_byte is not 256 long)");
        goto done;
    }
    if (start < 0) {
        PyErr_Format(PyExc_ValueError, "DFA state %d is out of range (start of the walk)", start);
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
    const int32_t *C = cls.view.buf, *lo = clo.view.buf, *hi = chi.view.buf, *tl = tlo.view.buf, *th = thi.view.buf,
                  *ti = tids.view.buf;
    const uint8_t *B = byte.view.buf;
    uint32_t *W = words.view.buf;
    int64_t *OI = oids.view.buf, *OS = ost.view.buf;
    for (int k = 0; k < 256; k++)
        if (C[k] < 0 || C[k] >= n_classes) {
            bad_index("byte class", C[k]);
            goto done_dfa;
        }
    /* each node of a tree is pushed at most once (it has one parent): the stack never outgrows
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
        const int32_t node = stack[2 * sp], parent = stack[2 * sp + 1];
        if (++steps % CHECK_EVERY == 0 && call_check(check) < 0) goto done_dfa;
        if (steps >= n_nodes) { /* a tree pops each non-root node once: more means a node has two parents */
            PyErr_Format(PyExc_ValueError, "child ranges of trie nodes overlap (node %d reached twice)", node);
            goto done_dfa;
        }
        const int32_t state = dfa_step(&d, parent, C[B[node]]);
        if (state == -3) goto done_dfa;
        if (state < 0) continue;
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
                OS[n_out] = state;
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
        for (int32_t c = hi[node] - 1; c >= lo[node]; c--) {
            stack[2 * sp] = c;
            stack[2 * sp + 1] = state;
            sp++;
        }
    }
    found = n_out;
done_dfa:
    if (dfa_ok) dfa_close(&d);
done:
    free(stack);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) buf_release(all[i]);
    if (found < 0) return NULL;
    return PyLong_FromSsize_t(found);
}

PyDoc_STRVAR(rows_walk_doc,
"rows_walk(automaton, step, n_classes, class_of_byte, flat, start, length, rows, states, offsets, ids, words, check)\n"
"    -> int\n\n"
"For each i, read token row ``rows[i]`` (bytes ``flat[start[r] + offsets[i] : start[r] + length[r]]``)\n"
"from DFA state ``states[i]``; when every byte leads to a live state, set the bit of ``ids[r]`` in\n"
"``words`` (uint32).  Returns the number of tokens allowed.");

static PyObject *rows_walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *automaton, *step, *o_cls, *o_flat, *o_start, *o_len, *o_rows, *o_states, *o_off, *o_ids, *o_words, *check;
    Py_ssize_t n_classes;
    if (!PyArg_ParseTuple(args, "OOnOOOOOOOOOO", &automaton, &step, &n_classes, &o_cls, &o_flat, &o_start, &o_len, &o_rows,
                          &o_states, &o_off, &o_ids, &o_words, &check))
        return NULL;
    Buf cls, flat, st, ln, rows, states, off, ids, words;
    Buf *all[] = {&cls, &flat, &st, &ln, &rows, &states, &off, &ids, &words};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) all[i]->held = 0;
    Dfa d;
    int dfa_ok = 0;
    Py_ssize_t kept = -1;
    if (buf_get(&cls, o_cls, 4, 0, "class_of_byte") < 0 || buf_get(&flat, o_flat, 1, 0, "flat") < 0 ||
        buf_get(&st, o_start, 8, 0, "start") < 0 || buf_get(&ln, o_len, 8, 0, "length") < 0 ||
        buf_get(&rows, o_rows, 8, 0, "rows") < 0 || buf_get(&states, o_states, 8, 0, "states") < 0 ||
        buf_get(&off, o_off, 8, 0, "offsets") < 0 || buf_get(&ids, o_ids, 8, 0, "ids") < 0 ||
        buf_get(&words, o_words, 4, 1, "words") < 0)
        goto done;
    const Py_ssize_t n_rows = buf_len(&st), n = buf_len(&rows), n_flat = buf_len(&flat), n_words = buf_len(&words);
    if (buf_len(&cls) != 256 || buf_len(&ln) != n_rows || buf_len(&ids) != n_rows || buf_len(&states) != n ||
        buf_len(&off) != n || !words.held) {
        PyErr_SetString(PyExc_ValueError, "token arrays disagree in length (or class_of_byte is not 256 long)");
        goto done;
    }
    dfa_ok = 1; /* dfa_open leaves ``d`` closable even when it fails */
    if (dfa_open(&d, automaton, step, check, n_classes) < 0) goto done_dfa;
    const int32_t *C = cls.view.buf;
    const uint8_t *F = flat.view.buf;
    const int64_t *S = st.view.buf, *L = ln.view.buf, *R = rows.view.buf, *Q = states.view.buf, *O = off.view.buf,
                  *I = ids.view.buf;
    uint32_t *W = words.view.buf;
    for (int k = 0; k < 256; k++)
        if (C[k] < 0 || C[k] >= n_classes) {
            bad_index("byte class", C[k]);
            goto done_dfa;
        }
    Py_ssize_t n_kept = 0, steps = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t r = R[i];
        if (r < 0 || r >= n_rows) {
            bad_index("token row", r);
            goto done_dfa;
        }
        /* compared without adding first: a sum of two huge values would wrap */
        if (S[r] < 0 || S[r] > n_flat || L[r] < 0 || L[r] > n_flat - S[r] || O[i] < 0 || O[i] > L[r]) {
            bad_index("byte range of token row", r);
            goto done_dfa;
        }
        const int64_t lo = S[r] + O[i], hi = S[r] + L[r];
        if (Q[i] < 0 || Q[i] > INT32_MAX) {
            bad_index("DFA state", Q[i]);
            goto done_dfa;
        }
        int32_t state = (int32_t)Q[i];
        for (int64_t p = lo; p < hi; p++) {
            if (++steps % CHECK_EVERY == 0 && call_check(check) < 0) goto done_dfa;
            state = dfa_step(&d, state, C[F[p]]);
            if (state == -3) goto done_dfa;
            if (state < 0) break;
        }
        if (state >= 0) {
            if (set_bit(W, n_words, I[r]) < 0) goto done_dfa;
            n_kept++;
        }
    }
    kept = n_kept;
done_dfa:
    if (dfa_ok) dfa_close(&d);
done:
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) buf_release(all[i]);
    if (kept < 0) return NULL;
    return PyLong_FromSsize_t(kept);
}

static PyMethodDef methods[] = {
    {"trie_walk", trie_walk, METH_VARARGS, trie_walk_doc},
    {"rows_walk", rows_walk, METH_VARARGS, rows_walk_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walk", "Native token walks over a lazily built DFA table (see engine/native.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
