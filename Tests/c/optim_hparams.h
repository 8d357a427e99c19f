/* The hyperparameters the optimizer state tests give group `group` of each algorithm:
 * not the defaults, so a state round trip has non-default values to carry (SGD with
 * momentum and per-group weight decay, amsgrad in Adam's group 1, centered RMSprop, ...). */
#ifndef BC_TEST_OPTIM_HPARAMS_H
#define BC_TEST_OPTIM_HPARAMS_H

#include <batchcore.h>

static void hparams_for(bc_optim_algorithm algo, int group, bc_optim_hparams *hp) {
    bc_optim_hparams_default(algo, hp, sizeof *hp);
    hp->lr = algo == BC_OPTIM_LION ? 1e-3 : 0.01;
    switch (algo) {
    case BC_OPTIM_SGD: hp->momentum = 0.9; hp->weight_decay = 0.01 * group; break;
    case BC_OPTIM_ADAM: hp->amsgrad = group; break;
    case BC_OPTIM_ADAMW: hp->weight_decay = 0.05; break;
    case BC_OPTIM_ADAGRAD: hp->initial_accumulator_value = 0.1; break;
    case BC_OPTIM_RMSPROP: hp->centered = 1; hp->momentum = 0.5; break;
    case BC_OPTIM_LAMB: hp->weight_decay = 0.01; break;
    case BC_OPTIM_LION: hp->weight_decay = 0.1; break;
    case BC_OPTIM_ADABRAKE: hp->momentum = 0.9; hp->alpha = 0.5; break;
    }
}

#endif
