/*
 * convert: JSON values between jansson and Python, directly (no text in between: a payload is
 * parsed once, by pulsec, and serialised once, by pulsec). dict/list/str/int/float/bool/None
 * map both ways; tuples go out as arrays; bytes-like objects go out as pulsec's binary values
 * (Socket.IO attachments) and binary values come in as bytes. Integers are 64-bit, as jansson's;
 * NaN and infinities are refused, as JSON has none.
 */
#include "binding.h"

PyObject *json_to_py(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (ps_is_binary(v)) {
            size_t len;
            void *data = ps_binary_data(v, &len);
            if (!data)
                return PyErr_NoMemory();
            PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
            PyMem_RawFree(data); /* the allocator handed to ps_set_allocator */
            return b;
        }
        PyObject *d = PyDict_New();
        if (!d)
            return NULL;
        const char *key;
        size_t klen;
        json_t *value;
        json_object_keylen_foreach(v, key, klen, value)
        {
            PyObject *k = PyUnicode_DecodeUTF8(key, (Py_ssize_t)klen, NULL);
            PyObject *x = k ? json_to_py(value) : NULL;
            if (!x || PyDict_SetItem(d, k, x) < 0) {
                Py_XDECREF(k);
                Py_XDECREF(x);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(k);
            Py_DECREF(x);
        }
        return d;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        PyObject *l = PyList_New((Py_ssize_t)n);
        if (!l)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            PyObject *x = json_to_py(json_array_get(v, i));
            if (!x) {
                Py_DECREF(l);
                return NULL;
            }
            PyList_SET_ITEM(l, (Py_ssize_t)i, x);
        }
        return l;
    }
    case JSON_STRING:
        return PyUnicode_DecodeUTF8(json_string_value(v), (Py_ssize_t)json_string_length(v), NULL);
    case JSON_INTEGER: return PyLong_FromLongLong(json_integer_value(v));
    case JSON_REAL: return PyFloat_FromDouble(json_real_value(v));
    case JSON_TRUE: Py_RETURN_TRUE;
    case JSON_FALSE: Py_RETURN_FALSE;
    case JSON_NULL:
    default: Py_RETURN_NONE;
    }
}

static json_t *bytes_to_json(PyObject *obj)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    json_t *j = ps_binary(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return j;
}

static json_t *dict_to_json(PyObject *obj)
{
    json_t *o = json_object();
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(obj, &pos, &k, &v)) {
        if (!PyUnicode_Check(k)) {
            PyErr_Format(PyExc_TypeError, "JSON object keys must be str, not %.100s",
                         Py_TYPE(k)->tp_name);
            goto fail;
        }
        Py_ssize_t klen;
        const char *key = PyUnicode_AsUTF8AndSize(k, &klen);
        if (!key)
            goto fail;
        json_t *jv = py_to_json(v);
        if (!jv || json_object_setn_new_nocheck(o, key, (size_t)klen, jv) != 0) {
            if (jv)
                PyErr_NoMemory();
            goto fail;
        }
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *seq_to_json(PyObject *obj)
{
    PyObject *fast = PySequence_Fast(obj, "not a sequence");
    if (!fast)
        return NULL;
    json_t *a = json_array();
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t i = 0; i < n; i++) {
        json_t *jv = py_to_json(PySequence_Fast_GET_ITEM(fast, i));
        if (!jv || json_array_append_new(a, jv) != 0) {
            if (jv)
                PyErr_NoMemory();
            json_decref(a);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return a;
}

json_t *py_to_json(PyObject *obj)
{
    if (obj == Py_None)
        return json_null();
    if (obj == Py_True)
        return json_true();
    if (obj == Py_False)
        return json_false();
    if (PyUnicode_Check(obj)) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
        return s ? json_stringn_nocheck(s, (size_t)len) : NULL;
    }
    if (PyLong_Check(obj)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "int too large for a JSON integer (64 bits)");
            return NULL;
        }
        if (x == -1 && PyErr_Occurred())
            return NULL;
        return json_integer((json_int_t)x);
    }
    if (PyFloat_Check(obj)) {
        json_t *r = json_real(PyFloat_AS_DOUBLE(obj));
        if (!r)
            PyErr_SetString(PyExc_ValueError, "NaN and infinities are not JSON");
        return r;
    }
    if (Py_EnterRecursiveCall(" while converting a value to JSON"))
        return NULL;
    json_t *out = NULL;
    if (PyDict_Check(obj))
        out = dict_to_json(obj);
    else if (PyList_Check(obj) || PyTuple_Check(obj))
        out = seq_to_json(obj);
    else if (PyBytes_Check(obj) || PyByteArray_Check(obj) || PyMemoryView_Check(obj))
        out = bytes_to_json(obj);
    else
        PyErr_Format(PyExc_TypeError, "Object of type %.100s is not JSON serializable",
                     Py_TYPE(obj)->tp_name);
    Py_LeaveRecursiveCall();
    return out;
}
