/*
 * binding.h: what the files of pulsec's CPython extension (pulsec._core) share.
 *
 * The extension owns one libuv loop per running App and drives it from the asyncio loop of the
 * thread that started the App (server.c): the loop's backend fd is watched with add_reader,
 * its next timer with call_later, and after every call into pulsec from Python the binding
 * checks whether libuv has work that only a uv_run() pass would hand to epoll or run (new
 * watchers, write callbacks, closing handles), scheduling such a pass with call_soon.
 * Everything therefore runs on one thread with the GIL held: pulsec's callbacks call Python
 * directly, and Python calls pulsec directly.
 *
 * Object tree, as pulsec's: Server -> View (one per attach) -> Channel -> Listener; a
 * Request per pending server-to-client request; a Session per Socket.IO connection that
 * middleware saw. Each Python object holds a pointer to its C object only while that object
 * exists: the view's data destructor (view_gone) clears the pointers of the view and its
 * channels, so a Python reference kept beyond it finds a closed object, never a freed one.
 *
 * Object structs begin with `PyObject ob_base;`, what PyObject_HEAD expands to, written out
 * because clang-format cannot parse the macro.
 */
#ifndef PULSEC_BINDING_H
#define PULSEC_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pulsec.h>
#include <stdbool.h>
#include <stdio.h>

/* ---- module state (module.c) ----------------------------------------------------------- */

/* Set once by _core._setup() from pulsec/__init__.py: the Python half of the API. */
typedef struct py_hooks {
    PyObject *channel_closed; /* exception classes */
    PyObject *channel_timeout;
    PyObject *channel_error;
    PyObject *denied;
    PyObject *log_exception;   /* (message, exc) -> None: logs with the traceback */
    PyObject *run_chain;       /* (awaitable, rest, payload, reply, channel) -> coroutine */
    PyObject *build_view;      /* (view, awaitable) -> coroutine */
    PyObject *handshake_class; /* (headers, query, cookies, auth, address, session) */
    PyObject *message_class;   /* (channel, event, payload, is_request) */
    PyObject *current_view;    /* contextvars.ContextVar holding the View being built */
    PyObject *in_request;      /* contextvars.ContextVar: True while a handler answers a request */
} py_hooks;

extern py_hooks hooks;

/* Live objects by type, for leak tests (_core.live_objects()). */
typedef struct py_live {
    Py_ssize_t servers, views, channels, listeners, requests, replies, sessions;
} py_live;

extern py_live live;

/*
 * Reports the current Python exception of user code (a handler, a view function, middleware)
 * with `what` through pulsec's logger and clears it; a ps.Denied is a refusal, not a failure,
 * and is not logged (its reason is the text). KeyboardInterrupt, SystemExit and other
 * non-Exception BaseExceptions are not swallowed: they are kept on the server and raised again
 * from the asyncio callback that ran libuv, where asyncio expects them. Returns the exception's
 * text for an error reply (a new reference, never NULL unless out of memory).
 */
typedef struct Server Server;
#define PS_WHAT_LEN 256
PyObject *report_exception(Server *srv, const char *what);
/* str(exc), or the class name when that is empty. New reference. */
PyObject *exception_text(PyObject *exc);

/* True for what `await` accepts (coroutines, futures, tasks). */
bool is_awaitable(PyObject *o);
/* Closes a coroutine nobody will await, so that Python does not warn about it. */
void discard_awaitable(PyObject *o);
/* Raises ps.ChannelClosed(what); returns NULL. */
PyObject *set_closed_error(const char *what);

/* ---- JSON values (convert.c) ----------------------------------------------------------- */

/* json_t -> dict/list/str/int/float/bool/None, and {"$binary": ...} -> bytes. New reference. */
PyObject *json_to_py(json_t *v);
/* The reverse; bytes, bytearray and memoryview become binary values. NULL with a Python
 * exception (TypeError, ValueError, OverflowError, RecursionError) if obj is not JSON. */
json_t *py_to_json(PyObject *obj);

/* ---- server (server.c) ----------------------------------------------------------------- */

struct Server {
    PyObject ob_base;
    ps_server *srv; /* NULL before start and after the stop completed */
    uv_loop_t loop;
    bool loop_ready;   /* uv_loop_init done, uv_loop_close pending */
    bool in_run;       /* inside uv_run: pulsec callbacks are on the stack */
    bool stopping;     /* ps_server_stop called */
    bool soon_pending; /* a call_soon(_tick) is scheduled */
    bool reader_added;
    bool in_worker;          /* a worker process of opts.workers: pulsec frees the server, not us */
    unsigned long thread_id; /* the thread of the asyncio loop */
    uint64_t timer_due;      /* uv_now() time the call_later handle fires at; 0 = none */
    PyObject *aloop;         /* the asyncio loop */
    PyObject *tick;          /* bound self._tick, given to call_soon / call_later / add_reader */
    PyObject *timer_handle;  /* asyncio.TimerHandle or NULL */
    PyObject *closed;        /* asyncio.Future resolved once the stop completed */
    PyObject *tasks;         /* set of tasks run for handlers and views (asyncio keeps weak refs) */
    PyObject *routes;        /* list of (path, fn) kept alive for ps_route's user pointers */
    PyObject *connect_mw;    /* list of functions, ps_use_connect's user pointers */
    PyObject *message_mw;    /* list of functions, ps_use_message's user pointers */
    PyObject *pending_exc;   /* a BaseException raised inside a callback, raised from _tick */
    char *deny_text;         /* the last message middleware denial, read by pulsec after it */
    PyObject *worker_main;   /* with opts.workers: what each worker process runs (index) */
};

extern PyTypeObject ServerType;

/*
 * After Python called into pulsec outside a uv_run pass: makes sure what that call started
 * (a write left for later, a timer, a closing handle) gets its uv_run pass. Cheap when there is
 * nothing to do. Returns 0, or -1 with a Python exception if scheduling failed.
 */
int server_after_call(Server *s);
/* Raises RuntimeError unless called on the App's loop thread while it runs. 0 or -1. */
int server_check_thread(Server *s);
/* Starts `coro` as a task on the App's loop (in `context` if not NULL), kept alive until done:
 * the task (new reference) or NULL; server_spawn returns 0 or -1 instead. */
PyObject *server_spawn_task(Server *s, PyObject *coro, PyObject *context);
int server_spawn(Server *s, PyObject *coro, PyObject *context);

/* Python is shutting down: no more user code may run. */
static inline int is_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* ---- views (view.c), channels, cleanups, replies, requests (channel.c), sessions ------- */

typedef struct View {
    PyObject ob_base;
    ps_view *view;      /* NULL once pulsec freed the view's data */
    Server *server;     /* strong */
    PyObject *states;   /* list of ps.State created while the view function ran */
    PyObject *channels; /* list of Channel */
    PyObject *task;     /* the async view function's task while it runs */
    PyObject *path;
    bool building; /* the view function is running: ps.channel() and State() attach here */
    bool disposed; /* on_dispose ran for every state */
} View;

typedef struct Channel {
    PyObject ob_base;
    ps_channel *ch;     /* NULL once the view is gone */
    View *view;         /* strong; cleared with the view */
    PyObject *id;       /* str */
    PyObject *handlers; /* dict: event -> list of Listener */
    bool listening;     /* the "*" listener of pulsec is registered */
} Channel;

extern PyTypeObject ViewType, ChannelType, ListenerType, ReplyType, RequestType, SessionType;

/* A Channel for a channel the view just opened (new reference). */
PyObject *channel_new(View *v, ps_channel *ch);
/* The view is gone: the channel forgets its C object and drops its handlers. */
void channel_gone(Channel *c);
/* The Session of a connection, made on first use (new reference). */
PyObject *session_get(Server *srv, ps_session *s);

/* The route trampolines handed to ps_route. */
int view_init(ps_view *view, json_t *props, void *user);
void view_dispose(ps_view *view, void *user);
/* The middleware trampolines handed to ps_use_connect / ps_use_message. */
int connect_middleware(ps_session *s, const ps_handshake *hs, void *user);
int message_middleware(ps_session *s, ps_message *m, void *user);

#endif
