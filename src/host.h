/*
** host.h — what the `modal` program's files share: its usage texts (host_usage.c).
*/
#ifndef MODAL_HOST_H
#define MODAL_HOST_H

extern const char modal__host_usage[];      /* modal --help */
extern const char modal__host_run_usage[];  /* modal run --help */

#endif
