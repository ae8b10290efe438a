/* engine_ext.h: the in-process request calls of the evaluation runner (include/engine.h). */
#ifndef EVAL_ENGINE_EXT_H
#define EVAL_ENGINE_EXT_H

#include "engine.h"

#endif
