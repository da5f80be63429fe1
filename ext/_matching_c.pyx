# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, infer_types=False
"""The compiled matching kernel: engine.matching_py's rules and output, run over C arrays.

`match_batch(orders, books)` takes and returns exactly what the pure twin does and gives the
same Decisions (compared with ==); the property test in tests/ keeps the two equal.

How it goes:
1. load: one pass over the orders reads each MatchOrder's fields straight out of the tuple,
   gives every SKU a dense code (a dict, first appearance), reads that SKU's book once (lots
   kept if count > 0, sorted by expiry 0-last, expiry, lot id, then book position) and gives
   every (SKU, buyer) of a limited SKU an allowance slot (one dict per limited SKU);
2. sort: each order becomes one 64-bit key (sku, -tier, arrival, index) sorted with an LSD
   radix sort, which is stable, so the index bits need no pass; a batch whose ranges do not
   fit in 64 bits takes a merge sort on the same order instead;
3. decide: the rules run in C over those arrays, and the Decision tuples are built in place.

The fast path takes the vocabulary types themselves (exact MatchOrder, SkuBook and Lot, str
SKUs, buyers and lot ids, int fields that fit in 64 bits, dict books and allowances, list or
tuple sequences). Anything else is handed to the pure twin, so the answer is the same on any
input; it also means no Python code of the caller's runs while the kernel holds borrowed
references into the batch.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t

from cpython.object cimport PyObject

from engine import matching_py as _twin
from engine.matching_types import (
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
        int32_t slot;     /* allowance slot, or -1 when the SKU has no per-buyer limit */
    } kg_order;

    typedef struct {
        int64_t left;     /* stock left in the SKU's lots */
        int32_t lot_lo;   /* first lot with stock left */
        int32_t lot_hi;
        int32_t reject;   /* reject_when_sold_out */
        int32_t limited;  /* allowances is not None */
        int64_t buyer_limit;
    } kg_book;

    typedef struct {
        int64_t count;
        int64_t expires;
        PyObject *lot_id;  /* borrowed from the caller's Lot */
        PyObject *one;     /* owned (lot_id, 1) fill, made on first use; tuples are immutable */
    } kg_lot;

    static PyObject *kg_decision_type = NULL;
    static int kg_decision_alloc = 0;

    static inline int kg_add(int64_t a, int64_t b, int64_t *out) {
        return __builtin_add_overflow(a, b, out);
    }

    /* Read an exact int (or bool) into int64; 1 when it is anything else or does not fit. */
    static inline int kg_int64(PyObject *o, int64_t *out) {
        int overflow;
        long long v;
        if (!PyLong_CheckExact(o) && !PyBool_Check(o)) return 1;
        v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow) return 1;
        *out = (int64_t)v;
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

    /* Stable LSD radix sort of keys on bits [lo, hi), 8 bits a pass; passes over a digit that
       every key shares are skipped. Leaves the result in a. */
    static void kg_radix(uint64_t *a, uint64_t *tmp, Py_ssize_t n, int lo, int hi) {
        Py_ssize_t count[256], i, sum, c;
        uint64_t all_or = 0, all_and = ~(uint64_t)0, *src = a, *dst = tmp, *t;
        int shift, d;
        for (i = 0; i < n; i++) { all_or |= a[i]; all_and &= a[i]; }
        for (shift = lo; shift < hi; shift += 8) {
            if ((((all_or ^ all_and) >> shift) & 0xff) == 0) continue;
            memset(count, 0, sizeof(count));
            for (i = 0; i < n; i++) count[(src[i] >> shift) & 0xff]++;
            for (sum = 0, d = 0; d < 256; d++) { c = count[d]; count[d] = sum; sum += c; }
            for (i = 0; i < n; i++) dst[count[(src[i] >> shift) & 0xff]++] = src[i];
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

    /* The serving order when the key does not fit 64 bits: sku, tier desc, arrival, index. */
    static inline int kg_order_before(const kg_order *o, int32_t a, int32_t b) {
        const kg_order *x = &o[a], *y = &o[b];
        if (x->sku != y->sku) return x->sku < y->sku;
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

    /* A Decision(action, reason, fills), stealing fills.
       namedtuple's __new__ is tuple.__new__(cls, (a, b, c)), which for a subclass is
       tp_alloc plus setting the items; doing that here saves a Python-level call per order.
       From 3.14 tuples cache their hash, so there (or if Decision ever stops being a plain
       tuple subclass) the kernel asks tuple.__new__ itself. */
    static PyObject *kg_decision(PyObject *action, PyObject *reason, PyObject *fills) {
        PyObject *d, *items, *args;
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

    /* One fill (lot_id, n); the (lot_id, 1) tuple is made once per lot and shared. */
    static inline PyObject *kg_fill(kg_lot *lot, int64_t n) {
        PyObject *num, *t;
        if (n == 1 && lot->one != NULL) {
            Py_INCREF(lot->one);
            return lot->one;
        }
        num = PyLong_FromLongLong(n);
        if (num == NULL) return NULL;
        t = PyTuple_Pack(2, lot->lot_id, num);
        Py_DECREF(num);
        if (n == 1 && t != NULL) {
            Py_INCREF(t);
            lot->one = t;
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
        int32_t lot_lo
        int32_t lot_hi
        int32_t reject
        int32_t limited
        int64_t buyer_limit

    ctypedef struct kg_lot:
        int64_t count
        int64_t expires
        PyObject* lot_id
        PyObject* one

    PyObject* kg_decision_type
    int kg_decision_alloc
    int kg_int64(PyObject* o, int64_t* out)
    int kg_add(int64_t a, int64_t b, int64_t* out)
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
    bint PyUnicode_CheckExact(PyObject* o)
    bint PyList_CheckExact(PyObject* o)
    bint PyTuple_CheckExact(PyObject* o)
    bint PyDict_CheckExact(PyObject* o)
    bint PyLong_CheckExact(PyObject* o)
    bint PyBool_Check(PyObject* o)
    PyObject* PyTuple_GET_ITEM(PyObject* t, Py_ssize_t i)
    Py_ssize_t PyTuple_GET_SIZE(PyObject* t)
    PyObject* PyList_GET_ITEM(PyObject* t, Py_ssize_t i)
    Py_ssize_t PyList_GET_SIZE(PyObject* t)
    PyObject* PySequence_Fast_GET_ITEM(PyObject* o, Py_ssize_t i)
    Py_ssize_t PySequence_Fast_GET_SIZE(PyObject* o)
    PyObject* PyDict_GetItemWithError(PyObject* d, PyObject* key) except? NULL
    int PyDict_SetItem(PyObject* d, PyObject* key, PyObject* v) except -1
    Py_ssize_t PyLong_AsSsize_t(PyObject* o) except? -1
    PyObject* PyLong_FromSsize_t(Py_ssize_t v) except NULL
    PyObject* PyList_New(Py_ssize_t n) except NULL
    void PyList_SET_ITEM(PyObject* lst, Py_ssize_t i, PyObject* v)
    PyObject* Py_None
    PyObject* Py_True
    void Py_DECREF(PyObject* o)
    void Py_XDECREF(PyObject* o)
    void* PyMem_Malloc(size_t n)
    void* PyMem_Realloc(void* p, size_t n)
    void PyMem_Free(void* p)
    void PyErr_NoMemory()

cdef enum:
    _OK = 0
    _UNSUPPORTED = 1
    _SMALL_BATCH = 32  # below this an insertion sort beats the radix passes

# The vocabulary, held as raw pointers for identity checks in the hot loops; the module keeps
# the objects alive.
cdef object _decision_type = Decision
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

# Decisions are made the way tuple.__new__ makes them only while Decision is the plain
# namedtuple it is today (no instance dict, no extra fields).
kg_decision_type = <PyObject*>Decision
kg_decision_alloc = (
    issubclass(Decision, tuple)
    and Decision.__basicsize__ == tuple.__basicsize__
    and Decision.__itemsize__ == tuple.__itemsize__
    and Decision._fields == ("action", "reason", "fills")
)


cdef class _Batch:
    """One call's C arrays; freed when the call returns, whichever way it returns."""

    cdef Py_ssize_t n
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
    cdef object seq          # the orders as a list or tuple, keeping them alive
    cdef dict codes          # sku -> dense code
    cdef list slot_dicts     # per code: dict buyer -> slot, or None when unlimited
    cdef list allowances     # per code: the book's allowances dict, or None

    def __cinit__(self, Py_ssize_t n):
        self.n = n
        # One block per array, sized for the worst case (every order its own SKU and slot).
        self.ords = <kg_order*>PyMem_Malloc(n * sizeof(kg_order) + 1)
        self.books = <kg_book*>PyMem_Malloc(n * sizeof(kg_book) + 1)
        self.allow = <int64_t*>PyMem_Malloc(n * sizeof(int64_t) + 1)
        self.keys = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t) + 1)
        self.tmp = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t) + 1)
        self.perm = <int32_t*>PyMem_Malloc(2 * n * sizeof(int32_t) + 1)
        self.cap_lots = 16
        self.lots = <kg_lot*>PyMem_Malloc(self.cap_lots * sizeof(kg_lot))
        if (self.ords == NULL or self.books == NULL or self.allow == NULL or self.keys == NULL
                or self.tmp == NULL or self.perm == NULL or self.lots == NULL):
            raise MemoryError()
        self.codes = {}
        self.slot_dicts = []
        self.allowances = []

    def __dealloc__(self):
        cdef Py_ssize_t j
        if self.lots != NULL:
            for j in range(self.nlots):
                Py_XDECREF(self.lots[j].one)
        PyMem_Free(self.ords)
        PyMem_Free(self.books)
        PyMem_Free(self.allow)
        PyMem_Free(self.keys)
        PyMem_Free(self.tmp)
        PyMem_Free(self.perm)
        PyMem_Free(self.lots)

    cdef int push_lot(self, int64_t count, int64_t expires, PyObject* lot_id) except -1:
        cdef kg_lot* grown
        if self.nlots == self.cap_lots:
            grown = <kg_lot*>PyMem_Realloc(self.lots, 2 * self.cap_lots * sizeof(kg_lot))
            if grown == NULL:
                raise MemoryError()
            self.lots = grown
            self.cap_lots *= 2
        self.lots[self.nlots].count = count
        self.lots[self.nlots].expires = expires
        self.lots[self.nlots].lot_id = lot_id
        self.lots[self.nlots].one = NULL
        self.nlots += 1
        return 0

    cdef int add_book(self, PyObject* books, PyObject* sku) except -1:
        """Read the book of a SKU seen for the first time; its code is self.nbooks."""
        cdef kg_book* bk = &self.books[self.nbooks]
        cdef PyObject* book = PyDict_GetItemWithError(books, sku)
        cdef PyObject* lots
        cdef PyObject* lot
        cdef PyObject* lot_id
        cdef PyObject* flag
        cdef PyObject* allowances
        cdef PyObject* num
        cdef Py_ssize_t j, nl
        cdef int64_t count, expires, total = 0
        bk.lot_lo = <int32_t>self.nlots
        bk.reject = 0
        bk.limited = 0
        bk.buyer_limit = 0
        allowances = Py_None
        if book != NULL:
            if Py_TYPE(book) != _book_t or PyTuple_GET_SIZE(book) != 4:
                return _UNSUPPORTED
            lots = PyTuple_GET_ITEM(book, 0)
            if not (PyList_CheckExact(lots) or PyTuple_CheckExact(lots)):
                return _UNSUPPORTED
            nl = PySequence_Fast_GET_SIZE(lots)
            for j in range(nl):
                lot = PySequence_Fast_GET_ITEM(lots, j)
                if Py_TYPE(lot) != _lot_t or PyTuple_GET_SIZE(lot) != 3:
                    return _UNSUPPORTED
                lot_id = PyTuple_GET_ITEM(lot, 0)
                if (not PyUnicode_CheckExact(lot_id)
                        or kg_int64(PyTuple_GET_ITEM(lot, 1), &count)
                        or kg_int64(PyTuple_GET_ITEM(lot, 2), &expires)):
                    return _UNSUPPORTED
                if count > 0:
                    if kg_add(total, count, &total):
                        return _UNSUPPORTED
                    self.push_lot(count, expires, lot_id)
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
                bk.limited = 1
        bk.lot_hi = <int32_t>self.nlots
        bk.left = total
        kg_sort_lots(&self.lots[bk.lot_lo], bk.lot_hi - bk.lot_lo)
        if bk.limited:
            self.slot_dicts.append({})
            self.allowances.append(<object>allowances)
        else:
            self.slot_dicts.append(None)
            self.allowances.append(None)
        num = PyLong_FromSsize_t(self.nbooks)
        PyDict_SetItem(<PyObject*>self.codes, sku, num)
        Py_DECREF(num)
        self.nbooks += 1
        return _OK

    cdef int slot_of(self, int32_t code, PyObject* buyer) except -1:
        """The allowance slot of (SKU, buyer), made from the book on first sight."""
        cdef PyObject* slots = <PyObject*>self.slot_dicts[code]
        cdef PyObject* found = PyDict_GetItemWithError(slots, buyer)
        cdef PyObject* left
        cdef PyObject* num
        cdef int64_t value
        if found != NULL:
            return <int>PyLong_AsSsize_t(found)
        left = PyDict_GetItemWithError(<PyObject*>self.allowances[code], buyer)
        if left == NULL:
            value = self.books[code].buyer_limit
        elif kg_int64(left, &value):
            return -2
        self.allow[self.nslots] = value
        num = PyLong_FromSsize_t(self.nslots)
        PyDict_SetItem(slots, buyer, num)
        Py_DECREF(num)
        self.nslots += 1
        return <int>(self.nslots - 1)

    cdef int load(self, PyObject* items, PyObject* books) except -1:
        """Read the orders (a list or tuple) and their books into the C arrays."""
        cdef Py_ssize_t i
        cdef PyObject* o
        cdef PyObject* sku
        cdef PyObject* code
        cdef PyObject* buyer
        cdef kg_order* ord
        cdef int32_t c
        cdef int slot
        for i in range(self.n):
            o = PySequence_Fast_GET_ITEM(items, i)
            if Py_TYPE(o) != _order_t or PyTuple_GET_SIZE(o) != 6:
                return _UNSUPPORTED
            ord = &self.ords[i]
            sku = PyTuple_GET_ITEM(o, 1)
            if (not PyUnicode_CheckExact(sku)
                    or kg_int64(PyTuple_GET_ITEM(o, 2), &ord.qty)
                    or kg_int64(PyTuple_GET_ITEM(o, 3), &ord.tier)
                    or kg_int64(PyTuple_GET_ITEM(o, 4), &ord.arrival)):
                return _UNSUPPORTED
            if ord.qty < 1:
                raise ValueError(_twin.QTY_ERROR.format(qty=ord.qty))
            code = PyDict_GetItemWithError(<PyObject*>self.codes, sku)
            if code == NULL:
                c = <int32_t>self.nbooks
                if self.add_book(books, sku) != _OK:
                    return _UNSUPPORTED
            else:
                c = <int32_t>PyLong_AsSsize_t(code)
            ord.sku = c
            if self.books[c].limited:
                buyer = PyTuple_GET_ITEM(o, 5)
                if not PyUnicode_CheckExact(buyer):
                    return _UNSUPPORTED
                slot = self.slot_of(c, buyer)
                if slot == -2:
                    return _UNSUPPORTED
                ord.slot = slot
            else:
                ord.slot = -1
        return _OK

    cdef void sort(self):
        """Fill perm with the serving order: sku, tier desc, arrival asc, input index."""
        cdef Py_ssize_t i, n = self.n
        cdef int64_t tmin = self.ords[0].tier, tmax = tmin
        cdef int64_t amin = self.ords[0].arrival, amax = amin
        cdef int sb, tb, ab, ib
        cdef uint64_t imask
        cdef kg_order* o
        for i in range(1, n):
            o = &self.ords[i]
            if o.tier < tmin:
                tmin = o.tier
            elif o.tier > tmax:
                tmax = o.tier
            if o.arrival < amin:
                amin = o.arrival
            elif o.arrival > amax:
                amax = o.arrival
        # Unsigned differences are exact: max >= min, so they fit in 64 bits.
        sb = kg_bitlen(<uint64_t>(self.nbooks - 1))
        tb = kg_bitlen(<uint64_t>tmax - <uint64_t>tmin)
        ab = kg_bitlen(<uint64_t>amax - <uint64_t>amin)
        ib = kg_bitlen(<uint64_t>(n - 1))
        if sb + tb + ab + ib > 64:
            for i in range(n):
                self.perm[i] = <int32_t>i
            kg_merge_sort(self.ords, self.perm, self.perm + n, n)
            return
        for i in range(n):
            o = &self.ords[i]
            self.keys[i] = (
                kg_shl(<uint64_t>o.sku, tb + ab + ib)
                | kg_shl(<uint64_t>tmax - <uint64_t>o.tier, ab + ib)
                | kg_shl(<uint64_t>o.arrival - <uint64_t>amin, ib)
                | <uint64_t>i
            )
        if n <= _SMALL_BATCH:
            kg_insertion(self.keys, n)
        else:
            # Keys are built in index order and the sort is stable: no pass on the index bits.
            kg_radix(self.keys, self.tmp, n, ib, sb + tb + ab + ib)
        imask = kg_shl(1, ib) - 1
        for i in range(n):
            self.perm[i] = <int32_t>(self.keys[i] & imask)

    cdef list decide(self):
        """Run the rules in serving order; the Decisions land at their input positions."""
        cdef list out = [None] * self.n
        cdef PyObject* res = <PyObject*>out
        cdef PyObject* fills
        cdef PyObject* fill
        cdef PyObject* d
        cdef Py_ssize_t p, i, k, j
        cdef kg_order* o
        cdef kg_book* bk
        cdef kg_lot* lot
        cdef int64_t need, take
        for p in range(self.n):
            i = self.perm[p]
            o = &self.ords[i]
            bk = &self.books[o.sku]
            if bk.limited and self.allow[o.slot] < o.qty:
                d = kg_decision(<PyObject*>_reject_o, <PyObject*>_limit_o, PyList_New(0))
            elif o.qty > bk.left:
                d = kg_decision(<PyObject*>(_reject_o if bk.reject else _queue_o),
                                <PyObject*>_sold_out_o, PyList_New(0))
            else:
                lot = &self.lots[bk.lot_lo]
                if lot.count >= o.qty:
                    # The common case: one lot covers the order.
                    fills = PyList_New(1)
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
                    bk.lot_lo += <int32_t>(k - 1 if lot[k - 1].count else k)
                bk.left -= o.qty
                if bk.limited:
                    self.allow[o.slot] -= o.qty
                d = kg_decision(<PyObject*>_fill_o, <PyObject*>_no_reason_o, fills)
            if d == NULL:
                raise MemoryError()
            # Replaces the None placeholder, which is immortal-ish but counted: drop it.
            Py_DECREF(PyList_GET_ITEM(res, i))
            PyList_SET_ITEM(res, i, d)
        return out


def match_batch(orders, books):
    """Decide every order of the batch; the same Decisions as engine.matching_py.match_batch."""
    cdef object seq
    cdef _Batch batch
    cdef Py_ssize_t n
    if type(orders) is list or type(orders) is tuple:
        seq = orders
    else:
        seq = list(orders)
    n = len(seq)
    if n == 0:
        return []
    if type(books) is not dict or n > 0x7FFFFFFF:
        return _twin_match(seq, books)
    batch = _Batch(n)
    if batch.load(<PyObject*>seq, <PyObject*>books) != _OK:
        return _twin_match(seq, books)
    batch.sort()
    return batch.decide()
