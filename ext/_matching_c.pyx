# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, infer_types=False
"""The compiled matching kernel: engine.worker.matching_py's rules and output, over C arrays.

`match_batch(orders, books)` takes and returns what the pure twin does and gives the same
Decisions (compared with ==); the property test in tests/ keeps the two equal.

How a call goes:
1. load: one pass over the orders reads each MatchOrder's fields straight out of the tuple,
   gives every SKU a dense code (first appearance), reads that SKU's book once (lots with
   count > 0, sorted by expiry with 0 last, then lot id, then book position) and gives every
   (SKU, buyer) of a limited SKU an allowance slot. SKUs and slots are found in one C hash
   table keyed by the str's cached hash, with str equality: what a dict lookup does, without
   an int object per entry;
2. sort: the batch is put in serving order, (-tier, arrival, index), as a whole: SKUs share
   no state, so the order restricted to each SKU is that SKU's serving order, and the SKU
   needs no place in the key. Each order becomes one 64-bit key sorted by an LSD radix sort,
   which is stable, so the index bits need no pass; a batch whose tiers and arrivals span
   too much for 64 bits takes a merge sort on the same order instead;
3. decide: the rules run in C over those arrays; the Decisions are built in place.

Output objects, the larger part of the cost: a FILL gets its own Decision and its own fills
list; a (lot_id, n) pair with n <= 8 is one tuple per lot, shared by the fills that take n
codes from that lot (tuples are immutable). QUEUE and REJECT decisions of one call share one
Decision per (action, reason), and with it one empty fills list: callers read Decisions and
never mutate them.

The fast path takes the vocabulary types themselves (exact MatchOrder, SkuBook and Lot; str
SKUs, buyers and lot ids; int fields that fit in 64 bits; dict books and allowances; list or
tuple sequences), which is what the worker builds. Anything else goes to the pure twin, so the
answer is the same on any input. Reading the batch runs no Python code (str hashing and
equality are C, nothing is allocated), so the references it borrows stay valid; deciding
allocates, and so may run the collector and finalizers, but by then the kernel only needs the
lot ids, which it holds.
"""

cimport cython
from libc.stdint cimport INT64_MAX, INT64_MIN, int32_t, int64_t, uint64_t

from cpython.object cimport PyObject

from engine.worker import matching_py as _twin
from engine.worker.matching_types import (
    FILL,
    LIMIT_EXCEEDED,
    NO_REASON,
    QUEUE,
    REJECT,
    SOLD_OUT,
    Decision,
    Lot,
    MatchOrder,
    SkuBook,
)

IMPLEMENTATION = "compiled"

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    typedef struct {
        int64_t qty;
        int64_t tier;
        int64_t arrival;
        int32_t sku;
        int32_t slot;       /* allowance slot, or -1 when the SKU has no per-buyer limit */
    } kg_order;

    typedef struct {
        int64_t left;       /* stock left in the SKU's lots */
        int64_t buyer_limit;
        PyObject *allowances;  /* borrowed dict, or NULL when the SKU has no per-buyer limit */
        int32_t lot_lo;     /* first lot with stock left */
        int32_t reject;     /* reject_when_sold_out */
    } kg_book;

    #define KG_SMALL_FILL 8

    typedef struct {
        int64_t count;
        int64_t expires;
        PyObject *lot_id;   /* held: decide allocates, and a finalizer could drop the Lot */
        PyObject *small[KG_SMALL_FILL];  /* owned (lot_id, n) fills for n = 1.., on first use */
    } kg_lot;

    /* Open addressing over (str, tag) -> value; keys are borrowed from the batch. The table
       outlives calls: an entry is in use only when its gen is the table's, so starting a call
       is a counter bump, not a clear. */
    typedef struct {
        Py_hash_t hash;
        PyObject *key;
        int32_t tag;
        int32_t value;
        uint32_t gen;
    } kg_entry;

    typedef struct {
        kg_entry *e;
        size_t mask;
        size_t used;
        uint32_t gen;
    } kg_table;

    static PyObject *kg_decision_type = NULL;
    static int kg_decision_alloc = 0;

    static inline int kg_add(int64_t a, int64_t b, int64_t *out) {
        return __builtin_add_overflow(a, b, out);
    }

    /* Read an exact int (or bool) into int64; 1 when it is anything else or does not fit.
       Small ints, nearly all of them, are read straight from the object. */
    static inline int kg_int64(PyObject *o, int64_t *out) {
        int overflow;
        long long v;
        if (!PyLong_CheckExact(o) && !PyBool_Check(o)) return 1;
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
            *out = (int64_t)PyUnstable_Long_CompactValue((PyLongObject *)o);
            return 0;
        }
    #else
        switch (Py_SIZE(o)) {
            case 0: *out = 0; return 0;
            case 1: *out = (int64_t)((PyLongObject *)o)->ob_digit[0]; return 0;
            case -1: *out = -(int64_t)((PyLongObject *)o)->ob_digit[0]; return 0;
        }
    #endif
        v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow) return 1;
        *out = (int64_t)v;
        return 0;
    }

    /* An exact str ready for kg_str_eq (3.11 may still hold a legacy, unready one). */
    static inline int kg_is_str(PyObject *o) {
        if (!PyUnicode_CheckExact(o)) return 0;
    #if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0) { PyErr_Clear(); return 0; }
    #endif
        return 1;
    }

    /* str equality as dict does it: same object, or same length, kind and code points.
       Ids are short, so the bytes are compared inline, 8 at a time, rather than by memcmp. */
    static inline int kg_str_eq(PyObject *a, PyObject *b) {
        const unsigned char *pa, *pb;
        size_t nb;
        uint64_t x, y;
        if (a == b) return 1;
        if (PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(b)
                || PyUnicode_KIND(a) != PyUnicode_KIND(b)) return 0;
        nb = (size_t)PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a);
        pa = (const unsigned char *)PyUnicode_DATA(a);
        pb = (const unsigned char *)PyUnicode_DATA(b);
        for (; nb >= 8; nb -= 8, pa += 8, pb += 8) {
            memcpy(&x, pa, 8);
            memcpy(&y, pb, 8);
            if (x != y) return 0;
        }
        for (; nb > 0; nb--) if (*pa++ != *pb++) return 0;
        return 1;
    }

    static int kg_table_init(kg_table *t, size_t cap) {
        t->e = (kg_entry *)PyMem_Calloc(cap, sizeof(kg_entry));
        t->mask = cap - 1;
        t->used = 0;
        t->gen = 1;
        return t->e == NULL;
    }

    static void kg_table_clear(kg_table *t) {
        t->used = 0;
        if (++t->gen == 0) {  /* wrapped: old entries could look current */
            memset(t->e, 0, (t->mask + 1) * sizeof(kg_entry));
            t->gen = 1;
        }
    }

    static inline size_t kg_slot_index(Py_hash_t hash, int32_t tag, size_t mask) {
        uint64_t h = (uint64_t)hash ^ ((uint64_t)(uint32_t)tag * 0x9E3779B97F4A7C15ull);
        return (size_t)(h ^ (h >> 29)) & mask;
    }

    /* The hash of an exact str: the cached one, read in place where the layout is known. */
    static inline Py_hash_t kg_str_hash(PyObject *o) {
    #if PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
        Py_hash_t h = ((PyASCIIObject *)o)->hash;
        if (h != -1) return h;
    #endif
        return PyObject_Hash(o);
    }

    static inline int kg_found(const kg_table *t, const kg_entry *e) { return e->gen == t->gen; }

    /* The entry of (key, tag), or the empty entry where it goes (kg_found tells which). */
    static inline kg_entry *kg_find(kg_table *t, Py_hash_t hash, PyObject *key, int32_t tag) {
        size_t i = kg_slot_index(hash, tag, t->mask);
        kg_entry *e;
        for (;;) {
            e = &t->e[i];
            if (e->gen != t->gen) return e;
            if (e->hash == hash && e->tag == tag && kg_str_eq(e->key, key)) return e;
            i = (i + 1) & t->mask;
        }
    }

    /* Fill an empty entry found by kg_find; keeps the table at most half full. */
    static int kg_insert(kg_table *t, kg_entry *slot, Py_hash_t hash, PyObject *key,
                         int32_t tag, int32_t value) {
        kg_entry *old = t->e, *e;
        size_t cap = t->mask + 1, used = t->used + 1, i;
        uint32_t gen = t->gen;
        slot->hash = hash; slot->key = key; slot->tag = tag; slot->value = value;
        slot->gen = gen;
        t->used = used;
        if (used * 2 <= cap) return 0;
        if (kg_table_init(t, cap * 2)) {
            t->e = old; t->mask = cap - 1; t->used = used; t->gen = gen;
            return 1;
        }
        for (i = 0; i < cap; i++) {
            if (old[i].gen != gen) continue;
            e = kg_find(t, old[i].hash, old[i].key, old[i].tag);
            *e = old[i];
            e->gen = t->gen;
        }
        t->used = used;
        PyMem_Free(old);
        return 0;
    }

    /* The twin's lot order: expiry 0 (never) last, then expiry, then lot id (code points). */
    static inline int kg_lot_before(const kg_lot *a, const kg_lot *b) {
        int za = a->expires == 0, zb = b->expires == 0;
        if (za != zb) return za < zb;
        if (a->expires != b->expires) return a->expires < b->expires;
        return PyUnicode_Compare(a->lot_id, b->lot_id) < 0;
    }

    /* Insertion sort: books hold a handful of lots, and it is stable (book position last). */
    static void kg_sort_lots(kg_lot *lots, Py_ssize_t n) {
        Py_ssize_t i, j;
        kg_lot x;
        for (i = 1; i < n; i++) {
            x = lots[i];
            for (j = i; j > 0 && kg_lot_before(&x, &lots[j - 1]); j--) lots[j] = lots[j - 1];
            lots[j] = x;
        }
    }

    static inline int kg_bitlen(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }
    static inline uint64_t kg_shl(uint64_t x, int s) { return s >= 64 ? 0 : x << s; }

    /* Stable LSD radix sort of keys on bits [lo, hi), in as few passes of up to 11 bits as
       it takes (two for the usual batch); a digit every key shares is skipped. Leaves the
       result in a. */
    #define KG_RADIX_MAX_BITS 11
    static void kg_radix(uint64_t *a, uint64_t *tmp, Py_ssize_t n, int lo, int hi) {
        Py_ssize_t count[1 << KG_RADIX_MAX_BITS], i, sum, c;
        uint64_t all_or = 0, all_and = ~(uint64_t)0, *src = a, *dst = tmp, *t, mask;
        int passes, width, shift, d;
        if (hi <= lo) return;
        passes = (hi - lo + KG_RADIX_MAX_BITS - 1) / KG_RADIX_MAX_BITS;
        width = (hi - lo + passes - 1) / passes;
        mask = ((uint64_t)1 << width) - 1;
        for (i = 0; i < n; i++) { all_or |= a[i]; all_and &= a[i]; }
        for (shift = lo; shift < hi; shift += width) {
            if ((((all_or ^ all_and) >> shift) & mask) == 0) continue;
            memset(count, 0, ((size_t)mask + 1) * sizeof(Py_ssize_t));
            for (i = 0; i < n; i++) count[(src[i] >> shift) & mask]++;
            for (sum = 0, d = 0; d <= (int)mask; d++) { c = count[d]; count[d] = sum; sum += c; }
            for (i = 0; i < n; i++) dst[count[(src[i] >> shift) & mask]++] = src[i];
            t = src; src = dst; dst = t;
        }
        if (src != a) memcpy(a, src, (size_t)n * sizeof(uint64_t));
    }

    /* Small batches: insertion sort on the keys (unique, since the index is in them). */
    static void kg_insertion(uint64_t *a, Py_ssize_t n) {
        Py_ssize_t i, j;
        uint64_t x;
        for (i = 1; i < n; i++) {
            x = a[i];
            for (j = i; j > 0 && x < a[j - 1]; j--) a[j] = a[j - 1];
            a[j] = x;
        }
    }

    /* The serving order when the key does not fit 64 bits: tier desc, arrival, index. */
    static inline int kg_order_before(const kg_order *o, int32_t a, int32_t b) {
        const kg_order *x = &o[a], *y = &o[b];
        if (x->tier != y->tier) return x->tier > y->tier;
        if (x->arrival != y->arrival) return x->arrival < y->arrival;
        return a < b;
    }

    /* Bottom-up merge sort of the permutation p (tmp is scratch); result in p. */
    static void kg_merge_sort(const kg_order *o, int32_t *p, int32_t *tmp, Py_ssize_t n) {
        Py_ssize_t width, lo, mid, hi, i, j, k;
        int32_t *src = p, *dst = tmp, *t;
        for (width = 1; width < n; width *= 2) {
            for (lo = 0; lo < n; lo += 2 * width) {
                mid = lo + width < n ? lo + width : n;
                hi = lo + 2 * width < n ? lo + 2 * width : n;
                i = lo; j = mid; k = lo;
                while (i < mid && j < hi)
                    dst[k++] = kg_order_before(o, src[j], src[i]) ? src[j++] : src[i++];
                while (i < mid) dst[k++] = src[i++];
                while (j < hi) dst[k++] = src[j++];
            }
            t = src; src = dst; dst = t;
        }
        if (src != p) memcpy(p, src, (size_t)n * sizeof(int32_t));
    }

    /* A Decision(action, reason, fills), stealing fills (NULL in: NULL out).
       namedtuple's __new__ is tuple.__new__(cls, (a, b, c)), which for a subclass is
       tp_alloc plus setting the items; doing that here saves a Python-level call per order.
       From 3.14 tuples cache their hash, which only tuple.__new__ knows to reset, so there
       (and if Decision ever stops being a plain namedtuple) the kernel calls it instead. */
    static PyObject *kg_decision(PyObject *action, PyObject *reason, PyObject *fills) {
        PyObject *d, *items, *args;
        if (fills == NULL) return NULL;
    #if PY_VERSION_HEX < 0x030E0000
        if (kg_decision_alloc) {
            PyTypeObject *tp = (PyTypeObject *)kg_decision_type;
            d = tp->tp_alloc(tp, 3);
            if (d == NULL) { Py_DECREF(fills); return NULL; }
            Py_INCREF(action);
            Py_INCREF(reason);
            PyTuple_SET_ITEM(d, 0, action);
            PyTuple_SET_ITEM(d, 1, reason);
            PyTuple_SET_ITEM(d, 2, fills);
            return d;
        }
    #endif
        items = PyTuple_Pack(3, action, reason, fills);
        Py_DECREF(fills);
        if (items == NULL) return NULL;
        args = PyTuple_Pack(1, items);
        Py_DECREF(items);
        if (args == NULL) return NULL;
        d = PyTuple_Type.tp_new((PyTypeObject *)kg_decision_type, args, NULL);
        Py_DECREF(args);
        return d;
    }

    /* One fill (lot_id, n); small ones are made once per lot and shared, as tuples are
       immutable. It holds a str and an int, so it can never be in a cycle: it leaves the GC
       at once, as the collector would do to it on its first pass anyway. */
    static inline PyObject *kg_fill(kg_lot *lot, int64_t n) {
        PyObject *num, *t;
        int cached = n >= 1 && n <= KG_SMALL_FILL;
        if (cached && lot->small[n - 1] != NULL) {
            Py_INCREF(lot->small[n - 1]);
            return lot->small[n - 1];
        }
        num = PyLong_FromLongLong(n);
        if (num == NULL) return NULL;
        t = PyTuple_Pack(2, lot->lot_id, num);
        Py_DECREF(num);
        if (t == NULL) return NULL;
        PyObject_GC_UnTrack(t);
        if (cached) {
            Py_INCREF(t);
            lot->small[n - 1] = t;
        }
        return t;
    }
    """
    ctypedef struct kg_order:
        int64_t qty
        int64_t tier
        int64_t arrival
        int32_t sku
        int32_t slot

    ctypedef struct kg_book:
        int64_t left
        int64_t buyer_limit
        PyObject* allowances
        int32_t lot_lo
        int32_t reject

    ctypedef struct kg_lot:
        int64_t count
        int64_t expires
        PyObject* lot_id
        PyObject** small

    enum: KG_SMALL_FILL

    ctypedef struct kg_entry:
        int32_t value

    ctypedef struct kg_table:
        kg_entry* e

    PyObject* kg_decision_type
    int kg_decision_alloc
    int kg_add(int64_t a, int64_t b, int64_t* out)
    int kg_int64(PyObject* o, int64_t* out)
    bint kg_is_str(PyObject* o)
    int kg_table_init(kg_table* t, size_t cap)
    void kg_table_clear(kg_table* t)
    bint kg_found(const kg_table* t, const kg_entry* e)
    Py_hash_t kg_str_hash(PyObject* o) except? -1
    kg_entry* kg_find(kg_table* t, Py_hash_t hash, PyObject* key, int32_t tag)
    int kg_insert(kg_table* t, kg_entry* slot, Py_hash_t hash, PyObject* key, int32_t tag,
                  int32_t value)
    void kg_sort_lots(kg_lot* lots, Py_ssize_t n)
    int kg_bitlen(uint64_t x)
    uint64_t kg_shl(uint64_t x, int s)
    void kg_radix(uint64_t* a, uint64_t* tmp, Py_ssize_t n, int lo, int hi)
    void kg_insertion(uint64_t* a, Py_ssize_t n)
    void kg_merge_sort(const kg_order* o, int32_t* p, int32_t* tmp, Py_ssize_t n)
    PyObject* kg_decision(PyObject* action, PyObject* reason, PyObject* fills)
    PyObject* kg_fill(kg_lot* lot, int64_t n)

cdef extern from "Python.h":
    # Raw, borrowed-pointer forms: the hot loops do their own reference counting.
    void* Py_TYPE(PyObject* o)
    bint PyList_CheckExact(PyObject* o)
    bint PyTuple_CheckExact(PyObject* o)
    bint PyDict_CheckExact(PyObject* o)
    Py_ssize_t PyDict_GET_SIZE(PyObject* o)
    PyObject* PyTuple_GET_ITEM(PyObject* t, Py_ssize_t i)
    Py_ssize_t PyTuple_GET_SIZE(PyObject* t)
    PyObject* PySequence_Fast_GET_ITEM(PyObject* o, Py_ssize_t i)
    Py_ssize_t PySequence_Fast_GET_SIZE(PyObject* o)
    PyObject* PyDict_GetItemWithError(PyObject* d, PyObject* key) except? NULL
    PyObject* PyList_New(Py_ssize_t n)
    void PyList_SET_ITEM(PyObject* lst, Py_ssize_t i, PyObject* v)
    PyObject* Py_None
    void Py_INCREF(PyObject* o)
    void Py_DECREF(PyObject* o)
    void Py_XDECREF(PyObject* o)
    void* PyMem_Malloc(size_t n)
    void* PyMem_Realloc(void* p, size_t n)
    void PyMem_Free(void* p)

cdef enum:
    _OK = 0
    _UNSUPPORTED = 1
    _SMALL_BATCH = 32  # up to this many orders, an insertion sort: no radix count tables
    _SKU_TAG = -1      # the tag of SKU entries; slot entries are tagged with their SKU code
    _MIN_CAP = 256     # arrays for at least this many orders
    _KEEP_CAP = 1 << 16  # arrays kept between calls up to this many orders (~10 MB)

# The vocabulary as raw pointers for the hot loops; the module keeps the objects alive.
cdef void* _order_t = <void*><PyObject*>MatchOrder
cdef void* _book_t = <void*><PyObject*>SkuBook
cdef void* _lot_t = <void*><PyObject*>Lot
cdef object _fill_o = FILL
cdef object _queue_o = QUEUE
cdef object _reject_o = REJECT
cdef object _no_reason_o = NO_REASON
cdef object _sold_out_o = SOLD_OUT
cdef object _limit_o = LIMIT_EXCEEDED
cdef object _twin_match = _twin.match_batch
cdef object _qty_error = _twin.QTY_ERROR

# Decisions are made the way tuple.__new__ makes them only while Decision is the plain
# namedtuple it is today (no instance dict, no extra fields).
kg_decision_type = <PyObject*>Decision
kg_decision_alloc = (
    issubclass(Decision, tuple)
    and Decision.__basicsize__ == tuple.__basicsize__
    and Decision.__itemsize__ == tuple.__itemsize__
    and Decision._fields == ("action", "reason", "fills")
)


@cython.final
cdef class _Batch:
    """The C arrays of a call, kept for the next: at 4096 orders, freeing them and faulting
    ~0.5 MB back in on every call cost more than the sort."""

    cdef Py_ssize_t cap, n
    cdef kg_order* ords
    cdef kg_book* books
    cdef Py_ssize_t nbooks
    cdef kg_lot* lots
    cdef Py_ssize_t nlots, cap_lots
    cdef int64_t* allow
    cdef Py_ssize_t nslots
    cdef uint64_t* keys
    cdef uint64_t* tmp
    cdef int32_t* perm
    cdef kg_table table      # SKU -> code, and (SKU code, buyer) -> allowance slot
    cdef int64_t tmin, tmax, amin, amax  # the batch's tier and arrival ranges

    def __cinit__(self, Py_ssize_t n):
        self.cap = n
        # Sized for the worst case: every order its own SKU and its own slot.
        self.ords = <kg_order*>PyMem_Malloc(n * sizeof(kg_order) + 1)
        self.books = <kg_book*>PyMem_Malloc(n * sizeof(kg_book) + 1)
        self.allow = <int64_t*>PyMem_Malloc(n * sizeof(int64_t) + 1)
        self.keys = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t) + 1)
        self.tmp = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t) + 1)
        self.perm = <int32_t*>PyMem_Malloc(2 * n * sizeof(int32_t) + 1)
        self.cap_lots = 16
        self.lots = <kg_lot*>PyMem_Malloc(self.cap_lots * sizeof(kg_lot))
        if (self.ords == NULL or self.books == NULL or self.allow == NULL or self.keys == NULL
                or self.tmp == NULL or self.perm == NULL or self.lots == NULL
                or kg_table_init(&self.table, 64)):
            raise MemoryError()

    def __dealloc__(self):
        self.end()
        PyMem_Free(self.ords)
        PyMem_Free(self.books)
        PyMem_Free(self.allow)
        PyMem_Free(self.keys)
        PyMem_Free(self.tmp)
        PyMem_Free(self.perm)
        PyMem_Free(self.lots)
        PyMem_Free(self.table.e)

    cdef void begin(self, Py_ssize_t n):
        self.n = n
        self.nbooks = 0
        self.nlots = 0
        self.nslots = 0
        kg_table_clear(&self.table)

    cdef void end(self):
        """Drop what the lots hold; the rest holds only borrowed pointers."""
        cdef Py_ssize_t j, k
        if self.lots != NULL:
            for j in range(self.nlots):
                Py_DECREF(self.lots[j].lot_id)
                for k in range(KG_SMALL_FILL):
                    Py_XDECREF(self.lots[j].small[k])
        self.nlots = 0

    cdef int push_lot(self, int64_t count, int64_t expires, PyObject* lot_id) except -1:
        cdef kg_lot* grown
        cdef int k
        if self.nlots == self.cap_lots:
            grown = <kg_lot*>PyMem_Realloc(self.lots, 2 * self.cap_lots * sizeof(kg_lot))
            if grown == NULL:
                raise MemoryError()
            self.lots = grown
            self.cap_lots *= 2
        self.lots[self.nlots].count = count
        self.lots[self.nlots].expires = expires
        Py_INCREF(lot_id)
        self.lots[self.nlots].lot_id = lot_id
        for k in range(KG_SMALL_FILL):
            self.lots[self.nlots].small[k] = NULL
        self.nlots += 1
        return 0

    cdef int add_book(self, PyObject* books, PyObject* sku) except -1:
        """Read the book of a SKU seen for the first time; its code is self.nbooks."""
        cdef kg_book* bk = &self.books[self.nbooks]
        cdef PyObject* book = PyDict_GetItemWithError(books, sku)
        cdef PyObject* lots
        cdef PyObject* lot
        cdef PyObject* flag
        cdef PyObject* allowances
        cdef Py_ssize_t j
        cdef int64_t count, expires, total = 0
        bk.lot_lo = <int32_t>self.nlots
        bk.reject = 0
        bk.buyer_limit = 0
        bk.allowances = NULL
        if book != NULL:  # a SKU missing from books is an empty book, as in the twin
            if Py_TYPE(book) != _book_t or PyTuple_GET_SIZE(book) != 4:
                return _UNSUPPORTED
            lots = PyTuple_GET_ITEM(book, 0)
            if not (PyList_CheckExact(lots) or PyTuple_CheckExact(lots)):
                return _UNSUPPORTED
            for j in range(PySequence_Fast_GET_SIZE(lots)):
                lot = PySequence_Fast_GET_ITEM(lots, j)
                if (Py_TYPE(lot) != _lot_t or PyTuple_GET_SIZE(lot) != 3
                        or not kg_is_str(PyTuple_GET_ITEM(lot, 0))
                        or kg_int64(PyTuple_GET_ITEM(lot, 1), &count)
                        or kg_int64(PyTuple_GET_ITEM(lot, 2), &expires)):
                    return _UNSUPPORTED
                if count > 0:
                    if kg_add(total, count, &total):
                        return _UNSUPPORTED
                    self.push_lot(count, expires, PyTuple_GET_ITEM(lot, 0))
            # The twin only asks the flag's truth: take the types whose truth is plain.
            flag = PyTuple_GET_ITEM(book, 1)
            if flag != Py_None:
                if kg_int64(flag, &count):
                    return _UNSUPPORTED
                bk.reject = count != 0
            allowances = PyTuple_GET_ITEM(book, 3)
            if allowances != Py_None:
                if (not PyDict_CheckExact(allowances)
                        or kg_int64(PyTuple_GET_ITEM(book, 2), &bk.buyer_limit)):
                    return _UNSUPPORTED
                bk.allowances = allowances
        bk.left = total
        kg_sort_lots(&self.lots[bk.lot_lo], self.nlots - bk.lot_lo)
        self.nbooks += 1
        return _OK

    cdef int slot_of(self, int32_t code, PyObject* buyer) except -2:
        """The allowance slot of (SKU, buyer), read from the book on first sight; -1: odd."""
        cdef Py_hash_t h = kg_str_hash(buyer)
        cdef kg_entry* e = kg_find(&self.table, h, buyer, code)
        cdef kg_book* bk
        cdef PyObject* left
        cdef int64_t value
        if kg_found(&self.table, e):
            return e.value
        bk = &self.books[code]
        left = NULL
        if PyDict_GET_SIZE(bk.allowances):  # nobody has bought the SKU yet: nothing to look up
            left = PyDict_GetItemWithError(bk.allowances, buyer)
        if left == NULL:
            value = bk.buyer_limit
        elif kg_int64(left, &value):
            return -1
        self.allow[self.nslots] = value
        if kg_insert(&self.table, e, h, buyer, code, <int32_t>self.nslots):
            raise MemoryError()
        self.nslots += 1
        return <int>(self.nslots - 1)

    cdef int load(self, PyObject* items, PyObject* books) except -1:
        """Read the orders (a list or tuple) and their books into the C arrays."""
        cdef Py_ssize_t i
        cdef PyObject* o
        cdef PyObject* sku
        cdef PyObject* buyer
        cdef kg_order* ord
        cdef kg_entry* e
        cdef Py_hash_t h
        cdef int32_t c
        cdef int64_t tmin = INT64_MAX, tmax = INT64_MIN, amin = INT64_MAX, amax = INT64_MIN
        for i in range(self.n):
            o = PySequence_Fast_GET_ITEM(items, i)
            if Py_TYPE(o) != _order_t or PyTuple_GET_SIZE(o) != 6:
                return _UNSUPPORTED
            ord = &self.ords[i]
            sku = PyTuple_GET_ITEM(o, 1)
            if (not kg_is_str(sku)
                    or kg_int64(PyTuple_GET_ITEM(o, 2), &ord.qty)
                    or kg_int64(PyTuple_GET_ITEM(o, 3), &ord.tier)
                    or kg_int64(PyTuple_GET_ITEM(o, 4), &ord.arrival)):
                return _UNSUPPORTED
            if ord.qty < 1:
                raise ValueError(_qty_error.format(qty=ord.qty))
            tmin = min(tmin, ord.tier)
            tmax = max(tmax, ord.tier)
            amin = min(amin, ord.arrival)
            amax = max(amax, ord.arrival)
            h = kg_str_hash(sku)
            e = kg_find(&self.table, h, sku, _SKU_TAG)
            if kg_found(&self.table, e):
                c = e.value
            else:
                c = <int32_t>self.nbooks
                if self.add_book(books, sku) != _OK:
                    return _UNSUPPORTED
                if kg_insert(&self.table, e, h, sku, _SKU_TAG, c):
                    raise MemoryError()
            ord.sku = c
            if self.books[c].allowances == NULL:
                ord.slot = -1
                continue
            buyer = PyTuple_GET_ITEM(o, 5)
            if not kg_is_str(buyer):
                return _UNSUPPORTED
            ord.slot = self.slot_of(c, buyer)
            if ord.slot < 0:
                return _UNSUPPORTED
        self.tmin, self.tmax, self.amin, self.amax = tmin, tmax, amin, amax
        return _OK

    cdef void sort(self):
        """Fill perm with the serving order: tier desc, arrival asc, input index."""
        cdef Py_ssize_t i, n = self.n
        cdef int64_t tmax = self.tmax, amin = self.amin
        cdef int tb, ab, ib
        cdef uint64_t imask
        cdef kg_order* o
        # Unsigned differences are exact: max >= min, so they fit in 64 bits.
        tb = kg_bitlen(<uint64_t>tmax - <uint64_t>self.tmin)
        ab = kg_bitlen(<uint64_t>self.amax - <uint64_t>amin)
        ib = kg_bitlen(<uint64_t>(n - 1))
        if tb + ab + ib > 64:
            for i in range(n):
                self.perm[i] = <int32_t>i
            kg_merge_sort(self.ords, self.perm, self.perm + n, n)
            return
        for i in range(n):
            o = &self.ords[i]
            self.keys[i] = (
                kg_shl(<uint64_t>tmax - <uint64_t>o.tier, ab + ib)
                | kg_shl(<uint64_t>o.arrival - <uint64_t>amin, ib)
                | <uint64_t>i
            )
        if n <= _SMALL_BATCH:
            kg_insertion(self.keys, n)
        else:
            # Keys are built in index order and the sort is stable: no pass on the index bits.
            kg_radix(self.keys, self.tmp, n, ib, tb + ab + ib)
        imask = kg_shl(1, ib) - 1
        for i in range(n):
            self.perm[i] = <int32_t>(self.keys[i] & imask)

    cdef object decide(self):
        """Run the rules in serving order; the Decisions land at their input positions."""
        cdef object out
        cdef PyObject* res
        cdef PyObject* fills
        cdef PyObject* fill
        cdef PyObject* d
        cdef PyObject* shared[3]  # QUEUE sold_out, REJECT sold_out, REJECT limit_exceeded
        cdef Py_ssize_t p, i, k, j
        cdef int which
        cdef kg_order* o
        cdef kg_book* bk
        cdef kg_lot* lot
        cdef int64_t need, take
        res = PyList_New(self.n)
        if res == NULL:
            raise MemoryError()
        out = <object>res  # takes a reference: drop the one PyList_New gave
        Py_DECREF(res)
        shared[0] = shared[1] = shared[2] = NULL
        try:
            for p in range(self.n):
                i = self.perm[p]
                o = &self.ords[i]
                bk = &self.books[o.sku]
                which = -1
                if o.slot >= 0 and self.allow[o.slot] < o.qty:
                    which = 2
                elif o.qty > bk.left:
                    which = bk.reject
                if which >= 0:
                    if shared[which] == NULL:
                        shared[which] = kg_decision(
                            <PyObject*>(_queue_o if which == 0 else _reject_o),
                            <PyObject*>(_limit_o if which == 2 else _sold_out_o),
                            PyList_New(0))
                        if shared[which] == NULL:
                            raise MemoryError()
                    Py_INCREF(shared[which])
                    PyList_SET_ITEM(res, i, shared[which])
                    continue
                lot = &self.lots[bk.lot_lo]
                if lot.count >= o.qty:
                    # The common case: one lot covers the order.
                    fills = PyList_New(1)
                    if fills == NULL:
                        raise MemoryError()
                    fill = kg_fill(lot, o.qty)
                    if fill == NULL:
                        Py_DECREF(fills)
                        raise MemoryError()
                    PyList_SET_ITEM(fills, 0, fill)
                    lot.count -= o.qty
                    if lot.count == 0:
                        bk.lot_lo += 1
                else:
                    # Span lots: every lot from lot_lo has stock, so count them, then take.
                    need = o.qty
                    k = 0
                    while need > 0:
                        need -= lot[k].count
                        k += 1
                    fills = PyList_New(k)
                    if fills == NULL:
                        raise MemoryError()
                    need = o.qty
                    for j in range(k):
                        take = need if need < lot[j].count else lot[j].count
                        fill = kg_fill(&lot[j], take)
                        if fill == NULL:
                            Py_DECREF(fills)
                            raise MemoryError()
                        PyList_SET_ITEM(fills, j, fill)
                        lot[j].count -= take
                        need -= take
                    bk.lot_lo += <int32_t>(k if lot[k - 1].count == 0 else k - 1)
                bk.left -= o.qty
                if o.slot >= 0:
                    self.allow[o.slot] -= o.qty
                d = kg_decision(<PyObject*>_fill_o, <PyObject*>_no_reason_o, fills)
                if d == NULL:
                    raise MemoryError()
                PyList_SET_ITEM(res, i, d)
        finally:
            for which in range(3):
                Py_XDECREF(shared[which])
        return out


cdef _Batch _spare = None  # the arrays of the last call, for the next


def match_batch(orders, books):
    """Decide every order of the batch; the same Decisions as the pure twin's match_batch."""
    global _spare
    cdef object seq
    cdef _Batch batch
    cdef Py_ssize_t n
    seq = orders if type(orders) is list or type(orders) is tuple else list(orders)
    n = len(seq)
    if n == 0:
        return []
    if type(books) is not dict or n > 0x7FFFFFFF:
        return _twin_match(seq, books)
    # Take the spare arrays (a call never runs Python code of the caller's, so no other call
    # can start while this one holds them), or make bigger ones.
    batch = _spare
    if batch is None or batch.cap < n:
        batch = _Batch(max(n, _MIN_CAP))
    else:
        _spare = None
    batch.begin(n)
    try:
        if batch.load(<PyObject*>seq, <PyObject*>books) == _OK:
            batch.sort()
            return batch.decide()
    finally:
        batch.end()
        if batch.cap <= _KEEP_CAP and (_spare is None or _spare.cap < batch.cap):
            _spare = batch
    return _twin_match(seq, books)
