// The torch_layerlr C++ API: layer-wise learning-rate optimizers as torch::optim::Optimizer classes, on the
// same fused engine (layerlr::fused_step_) as the Python package.
#pragma once

#include "torch_layerlr/optim/dals.h"
#include "torch_layerlr/optim/depth_scaled.h"
#include "torch_layerlr/optim/fused_optimizer.h"
#include "torch_layerlr/optim/grokfast.h"
#include "torch_layerlr/optim/lamb.h"
#include "torch_layerlr/optim/lars.h"
#include "torch_layerlr/optim/layerwise.h"
#include "torch_layerlr/optim/recipe.h"
#include "torch_layerlr/optim/state_precision.h"
