/* quilkin: hands argv to the command line in cli/. Nothing else. */
#include "cli/cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}
