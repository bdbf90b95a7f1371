/*
 * CLibYAML: the distribution's libyaml (libyaml-dev), the event parser that policy and
 * configuration files are read with. Nothing here holds logic.
 */
#include <yaml.h>
