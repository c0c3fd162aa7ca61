/*
 * session: Session, one per connection that Python sees (middleware, view.session), kept in
 * pulsec's session data slot, and the middleware trampolines: on_connect with the Handshake,
 * on_channel_message with the Message. Middleware is sync; ps.Denied refuses with its reason,
 * any other exception refuses with "internal error" (logged): middleware faces clients that are
 * not trusted yet, who learn no internals.
 */
#include "binding.h"

/* ---- Session --------------------------------------------------------------------------- */

typedef struct Session {
    PyObject ob_base;
    ps_session *s; /* NULL once pulsec freed the session */
    Server *server;
    PyObject *id;
    PyObject *handshake;
    PyObject *data; /* the app's per-session dict */
} Session;

static void session_gone(void *data)
{
    Session *sess = data;
    sess->s = NULL;
    Py_DECREF(sess);
}

static Session *get_session(Server *srv, ps_session *s)
{
    Session *sess = ps_session_data(s);
    if (sess)
        return (Session *)Py_NewRef(sess);
    sess = PyObject_GC_New(Session, &SessionType);
    if (!sess)
        return NULL;
    sess->s = s;
    sess->server = (Server *)Py_NewRef(srv);
    sess->id = PyUnicode_FromString(ps_session_id(s));
    sess->handshake = NULL;
    sess->data = PyDict_New();
    live.sessions++;
    PyObject_GC_Track(sess);
    if (!sess->id || !sess->data) {
        Py_DECREF(sess);
        return NULL;
    }
    ps_session_set_data(s, Py_NewRef(sess), session_gone);
    return sess;
}

PyObject *session_get(Server *srv, ps_session *s)
{
    return (PyObject *)get_session(srv, s);
}

static PyObject *build_handshake(Session *sess, const ps_handshake *hs)
{
    PyObject *headers = PyDict_New();
    if (!headers)
        return NULL;
    const char *name, *value;
    for (size_t i = 0; ps_handshake_header_at(hs, i, &name, &value); i++) {
        PyObject *n = PyUnicode_FromString(name);
        PyObject *low = n ? PyObject_CallMethod(n, "lower", NULL) : NULL;
        PyObject *v = low ? PyUnicode_DecodeLatin1(value, (Py_ssize_t)strlen(value), NULL) : NULL;
        int rc = v ? PyDict_SetItem(headers, low, v) : -1; /* the last one wins, as in C */
        Py_XDECREF(n);
        Py_XDECREF(low);
        Py_XDECREF(v);
        if (rc < 0) {
            Py_DECREF(headers);
            return NULL;
        }
    }
    PyObject *cookies = json_to_py(ps_handshake_cookies(hs));
    PyObject *auth = json_to_py(ps_handshake_auth(hs));
    PyObject *out = NULL;
    if (cookies && auth)
        out = PyObject_CallFunction(hooks.handshake_class, "OsOOsO", headers,
                                    ps_handshake_query_string(hs), cookies, auth,
                                    ps_handshake_address(hs), (PyObject *)sess);
    Py_DECREF(headers);
    Py_XDECREF(cookies);
    Py_XDECREF(auth);
    return out;
}

static PyObject *Session_get_handshake(Session *sess, void *closure)
{
    if (!sess->handshake) {
        if (!sess->s)
            Py_RETURN_NONE;
        sess->handshake = build_handshake(sess, ps_session_handshake(sess->s));
        if (!sess->handshake)
            return NULL;
    }
    return Py_NewRef(sess->handshake);
}

static PyObject *Session_get_closed(Session *sess, void *closure)
{
    return PyBool_FromLong(sess->s == NULL);
}

static PyObject *Session_disconnect(Session *sess, PyObject *unused)
{
    if (sess->s) {
        if (server_check_thread(sess->server) < 0)
            return NULL;
        ps_session_disconnect(sess->s);
        if (server_after_call(sess->server) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Session_repr(Session *sess)
{
    return PyUnicode_FromFormat("<pulsec.Session %U%s>", sess->id, sess->s ? "" : " closed");
}

static int Session_traverse(Session *sess, visitproc visit, void *arg)
{
    Py_VISIT(sess->server);
    Py_VISIT(sess->handshake);
    Py_VISIT(sess->data);
    return 0;
}

static int Session_clear(Session *sess)
{
    Py_CLEAR(sess->server);
    Py_CLEAR(sess->handshake);
    Py_CLEAR(sess->data);
    return 0;
}

static void Session_dealloc(Session *sess)
{
    PyObject_GC_UnTrack(sess);
    Session_clear(sess);
    Py_CLEAR(sess->id);
    live.sessions--;
    PyObject_GC_Del(sess);
}

static PyMemberDef Session_members[] = {
    {"id", T_OBJECT, offsetof(Session, id), READONLY, "The Socket.IO socket id."},
    {"data", T_OBJECT, offsetof(Session, data), READONLY,
     "A dict for the app's own per-session values (set in on_connect, read later)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Session_getset[] = {
    {"handshake", (getter)Session_get_handshake, NULL, "What the client sent to connect.", NULL},
    {"closed", (getter)Session_get_closed, NULL, "The connection has ended.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Session_methods[] = {
    {"disconnect", (PyCFunction)Session_disconnect, METH_NOARGS,
     "Ends the connection from the server (its views are disposed)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pulsec.Session",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One client connection (a browser tab), as middleware sees it.",
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_traverse = (traverseproc)Session_traverse,
    .tp_clear = (inquiry)Session_clear,
    .tp_repr = (reprfunc)Session_repr,
    .tp_members = Session_members,
    .tp_getset = Session_getset,
    .tp_methods = Session_methods,
};

/* ---- middleware ------------------------------------------------------------------------ */

/* The reason of a ps.Denied being raised (clears it), or NULL if it is another exception. */
static PyObject *take_denial(PyObject **data)
{
    *data = NULL;
    if (!PyErr_ExceptionMatches(hooks.denied))
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *reason = value ? PyObject_GetAttrString(value, "reason") : NULL;
    if (!reason || !PyUnicode_Check(reason)) {
        Py_XDECREF(reason);
        PyErr_Clear();
        reason = value ? exception_text(value) : PyUnicode_FromString("denied");
    }
    *data = value ? PyObject_GetAttrString(value, "data") : NULL;
    if (!*data)
        PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return reason;
}

/* A middleware call's outcome: 0 to go on; else *reason and *data say why (new refs). */
static int middleware_outcome(Server *srv, PyObject *r, const char *what, PyObject **reason,
                              PyObject **data)
{
    *reason = *data = NULL;
    if (r && is_awaitable(r)) {
        discard_awaitable(r);
        PyErr_Format(PyExc_TypeError, "%s must be a plain function, not async", what);
        r = NULL;
    } else if (r) {
        return 0;
    }
    *reason = take_denial(data);
    if (*reason)
        return -1;
    /* Not a denial: a bug of the app. Closed, and the client learns no internals. */
    PyObject *text = report_exception(srv, what);
    Py_XDECREF(text);
    *reason = PyUnicode_FromString("internal error");
    return -1;
}

int connect_middleware(ps_session *s, const ps_handshake *hs, void *user)
{
    PyObject *entry = user;
    Server *srv = (Server *)PyTuple_GET_ITEM(entry, 0);
    PyObject *fn = PyTuple_GET_ITEM(entry, 1);
    if (srv->pending_exc)
        return ps_session_deny(s, "server stopping", NULL);
    Session *sess = get_session(srv, s);
    PyObject *handshake = sess ? Session_get_handshake(sess, NULL) : NULL;
    PyObject *r = handshake ? PyObject_CallOneArg(fn, handshake) : NULL;
    Py_XDECREF(handshake);
    Py_XDECREF(sess);
    PyObject *reason, *data;
    int rc = middleware_outcome(srv, r, "on_connect middleware", &reason, &data);
    Py_XDECREF(r);
    if (rc == 0)
        return 0;
    json_t *j = data && data != Py_None ? py_to_json(data) : NULL;
    if (!j)
        PyErr_Clear();
    rc = ps_session_deny(s, reason ? PyUnicode_AsUTF8(reason) : "denied", j);
    json_decref(j);
    Py_XDECREF(reason);
    Py_XDECREF(data);
    return rc;
}

static PyObject *find_channel(ps_channel *ch)
{
    View *v = ps_view_data(ps_channel_view(ch));
    if (v && v->channels)
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v->channels); i++)
            if (((Channel *)PyList_GET_ITEM(v->channels, i))->ch == ch)
                return Py_NewRef(PyList_GET_ITEM(v->channels, i));
    Py_RETURN_NONE;
}

int message_middleware(ps_session *s, ps_message *m, void *user)
{
    PyObject *entry = user;
    Server *srv = (Server *)PyTuple_GET_ITEM(entry, 0);
    PyObject *fn = PyTuple_GET_ITEM(entry, 1);
    if (srv->pending_exc) {
        m->deny_error = "server stopping";
        return PS_EDENIED;
    }
    Session *sess = get_session(srv, s);
    PyObject *channel = find_channel(m->channel);
    PyObject *payload = json_to_py(m->payload);
    PyObject *msg = sess && payload
                        ? PyObject_CallFunction(hooks.message_class, "OsOO", channel, m->event,
                                                payload, m->is_request ? Py_True : Py_False)
                        : NULL;
    PyObject *r = msg ? PyObject_CallFunctionObjArgs(fn, (PyObject *)sess, msg, NULL) : NULL;
    Py_XDECREF(msg);
    Py_XDECREF(payload);
    Py_XDECREF(channel);
    Py_XDECREF(sess);
    PyObject *reason, *data;
    int rc = middleware_outcome(srv, r, "on_channel_message middleware", &reason, &data);
    Py_XDECREF(r);
    Py_XDECREF(data);
    if (rc == 0)
        return 0;
    /* pulsec reads the text right after this returns, to answer a denied request. */
    free(srv->deny_text);
    const char *text = reason ? PyUnicode_AsUTF8(reason) : NULL;
    srv->deny_text = strdup(text ? text : "denied");
    PyErr_Clear();
    Py_XDECREF(reason);
    m->deny_error = srv->deny_text ? srv->deny_text : "denied";
    return PS_EDENIED;
}
